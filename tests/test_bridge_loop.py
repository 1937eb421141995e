"""robot_bridge.policy_loop and teleop_keys without ROS: hand-worked times and numbers."""

from __future__ import annotations

import numpy as np
import pytest

from robot_bridge.inference import SyncInference, ThreadedInference, run_policy
from robot_bridge.policy_loop import LoopTiming, PolicyLoop
from robot_bridge.teleop_keys import KeyTeleop

T = LoopTiming(period=0.1, tolerance=0.01, stale=0.2)
IMG = np.zeros((4, 4, 3), np.uint8)
STATE = np.zeros(8, np.float32)


class ChunkPolicy:
    """Chunk k is [[k, 0, ...], [k + 0.1, ...], ...]: which chunk and step an action came from is visible."""

    def __init__(self, h=3):
        self.calls, self.h = 0, h

    def __call__(self, image, state, task):
        self.calls += 1
        chunk = np.zeros((self.h, 7))
        chunk[:, 0] = self.calls + 0.1 * np.arange(self.h)
        chunk[:, 6] = -1.0
        return chunk


def running(n_action_steps=0):
    loop = PolicyLoop(T, n_action_steps)
    loop.on_state(STATE, 0.0)
    loop.start(0.0)
    return loop


def test_frames_take_ticks_on_the_grid_and_chunks_are_consumed_in_order():
    loop, pol = running(), ChunkPolicy()
    inf = SyncInference(pol)
    # 30 Hz frames, 10 Hz ticks: frames at 0, 33, 67 ms -> only the first acts; the frame at 99.5 ms is within the
    # 10 ms tolerance of the 100 ms tick and acts; 133 ms does not.
    acted = []
    for t in (0.0, 0.0333, 0.0667, 0.0995, 0.1333, 0.1667, 0.2):
        loop.on_state(STATE, t)
        tick = loop.on_frame(IMG, int(t * 1e9), t, inf, "task")
        acted.append(None if tick is None else tick.action[0])
    assert acted == [1.0, None, None, 1.1, None, None, 1.2]
    assert pol.calls == 1  # one chunk of 3 covers three ticks
    tick = loop.on_frame(IMG, 300_000_000, 0.3, inf, "task")
    assert tick.action[0] == 2.0 and pol.calls == 2 and tick.stamp_ns == 300_000_000


def test_n_action_steps_requeries_early():
    loop, pol = running(n_action_steps=2), ChunkPolicy()
    inf = SyncInference(pol)
    xs = []
    for k in range(4):
        t = 0.1 * k
        loop.on_state(STATE, t)
        xs.append(loop.on_frame(IMG, int(t * 1e9), t, inf, "task").action[0])
    assert xs == [1.0, 1.1, 2.0, 2.1]


def test_timer_takes_a_late_tick_with_a_fresh_frame_and_holds_on_stale():
    loop, pol = running(), ChunkPolicy()
    inf = SyncInference(pol)
    loop.on_frame(IMG, 0, 0.0, inf, "task")  # tick at 0, next due 0.1
    assert loop.on_timer(0.105, inf, "task") is None  # within tolerance: wait for a frame
    tick = loop.on_timer(0.111, inf, "task")  # frame 111 ms old, state 111 ms old: fresh -> late act
    assert tick.kind == "act" and tick.late and tick.action[0] == 1.1
    tick = loop.on_timer(0.25, inf, "task")  # due 0.2; frame now 250 ms old > 200 ms stale -> hold
    assert tick.kind == "hold" and np.all(tick.action[:6] == 0) and tick.action[6] == -1.0  # gripper kept
    assert loop.stats.holds == 1 and loop.stats.late == 1


def test_watchdog_holds_as_the_frame_turns_stale_not_at_the_next_tick():
    """stale 200 ms, margin 10 ms (the timer's period): a frame at 0 is acted on until it is 190 ms old; the timer sends
    the hold at 191 ms (the next due tick would be 210 ms), the loop says 'stale' until a fresh frame takes a tick."""
    loop, pol = PolicyLoop(LoopTiming(period=0.1, tolerance=0.01, stale=0.2, margin=0.01), 0), ChunkPolicy()
    loop.start(0.0)
    loop.on_state(STATE, 0.0)
    inf = SyncInference(pol)
    assert loop.on_frame(IMG, 0, 0.0, inf, "task").kind == "act"
    assert loop.on_timer(0.189, inf, "task").kind == "act"  # late tick (due 0.1), frame 189 ms old: still fresh
    tick = loop.on_timer(0.191, inf, "task")  # 191 ms >= 190 ms: hold at once
    assert tick.kind == "hold" and loop.state == "stale" and loop.running
    assert loop.on_timer(0.195, inf, "task") is None  # one hold per turn; the next due tick (0.2 + 0.01) holds again
    assert loop.on_timer(0.211, inf, "task").kind == "hold"
    loop.on_state(STATE, 0.295)
    tick = loop.on_frame(IMG, 295_000_000, 0.295, inf, "task")  # within the tolerance of the tick due at 0.3
    assert tick.kind == "act" and loop.state == "running" and tick.stamp_ns == 295_000_000


def test_freshness_comes_from_the_stamp_not_the_arrival():
    loop, pol = running(), ChunkPolicy()
    inf = SyncInference(pol)
    # a frame captured at 0.0 but delivered at 0.25 (it sat in a queue) is 250 ms old: the tick holds
    loop.on_state(STATE, 0.25)
    tick = loop.on_frame(IMG, 0, 0.25, inf, "task")
    assert tick.kind == "hold" and pol.calls == 0


def test_policy_failure_faults_once_then_silence():
    def boom(*_):
        raise RuntimeError("bad weights")

    loop, inf = running(), SyncInference(boom)
    tick = loop.on_frame(IMG, 0, 0.0, inf, "task")
    assert tick.kind == "fault" and "bad weights" in tick.error and np.all(tick.action[:6] == 0)
    assert loop.state == "faulted"
    assert loop.on_frame(IMG, 100_000_000, 0.1, inf, "task") is None and loop.on_timer(0.5, inf, "task") is None
    loop.on_state(STATE, 0.6)
    loop.start(0.6)  # restart clears the fault
    assert loop.on_frame(IMG, 600_000_000, 0.6, SyncInference(ChunkPolicy()), "task").kind == "act"


def test_wrong_chunk_shape_is_a_fault():
    loop = running()
    tick = loop.on_frame(IMG, 0, 0.0, SyncInference(lambda *_: np.zeros((4, 6))), "task")
    assert tick.kind == "fault" and "shape (4, 6)" in tick.error


class ManualInference:
    """Pipelined inference whose results arrive when the test says so: `finish()` runs the oldest request (the
    policy runs between ticks, as in a worker thread) and its result is seen by the next tick."""

    def __init__(self, act):
        self.act, self.pending, self.requests, self._done = act, [], [], None

    def submit(self, request):
        self.pending.append(request)
        self.requests.append(request)

    def poll(self):
        result, self._done = self._done, None
        return result

    def finish(self):
        self._done = run_policy(self.act, self.pending.pop(0))


def frame_ticks(loop, inf, times, finish_after=()):
    """A frame (and state) at each time in `times` (s); `finish()` after the ticks at `finish_after`.
    Returns (kind, action x, chunk stamp in s) per tick."""
    out = []
    for t in times:
        loop.on_state(STATE, t)
        tick = loop.on_frame(IMG, round(t * 1e9), t, inf, "task")
        out.append((tick.kind, round(float(tick.action[0]), 3), round(tick.chunk_stamp_ns * 1e-9, 3)))
        if round(t, 3) in finish_after:
            inf.finish()
    return out


def test_pipelined_chunk_is_computed_from_the_observation_when_the_previous_chunk_starts():
    """prefetch = H = 3, ticks every 100 ms. Chunk k+1 is requested by the tick that starts chunk k (fewer than 3
    actions left after its pop) from that tick's frame; the tick itself never runs the policy. The inference after
    the 0.4 s request is slow (not finished by 0.7 s): that tick waits (a hold keeping the gripper), the chunk starts
    at 0.8 s."""
    loop, pol = PolicyLoop(T, 0, prefetch=3), ChunkPolicy()
    inf = ManualInference(pol)
    loop.on_state(STATE, 0.0)
    loop.start(0.0)
    got = frame_ticks(loop, inf, [0.1 * k for k in range(9)], finish_after=(0.0, 0.1, 0.7))
    assert got == [("wait", 0.0, 0.0),  # first chunk after start: requested from the 0.0 frame, nothing to send yet
                   ("act", 1.0, 0.0), ("act", 1.1, 0.0), ("act", 1.2, 0.0),  # chunk 1 <- frame 0.0; 0.1 requests 2
                   ("act", 2.0, 0.1), ("act", 2.1, 0.1), ("act", 2.2, 0.1),  # chunk 2 <- frame 0.1; 0.4 requests 3
                   ("wait", 0.0, 0.0),  # 0.7: chunk 3 not ready
                   ("act", 3.0, 0.4)]  # chunk 3 <- frame 0.4, started 400 ms after its frame; 0.8 requests chunk 4
    assert [round(r.stamp_ns * 1e-9, 3) for r in inf.requests] == [0.0, 0.1, 0.4, 0.8]
    assert pol.calls == 3 and loop.stats.waits == 2 and loop.stats.inferences == 3
    assert loop.stats.chunk_age_ms == pytest.approx(400.0)
    inf.finish()  # chunk 4 (from the 0.8 frame) is ready early: it waits for chunk 3 to end
    assert frame_ticks(loop, inf, [0.9, 1.0, 1.1]) == [("act", 3.1, 0.4), ("act", 3.2, 0.4), ("act", 4.0, 0.8)]


def test_pipelined_prefetch_one_requests_on_the_last_action_of_a_chunk():
    loop, pol = PolicyLoop(T, 0, prefetch=1), ChunkPolicy()
    inf = ManualInference(pol)
    loop.on_state(STATE, 0.0)
    loop.start(0.0)
    got = frame_ticks(loop, inf, [0.1 * k for k in range(6)], finish_after=(0.0, 0.3))
    assert got == [("wait", 0.0, 0.0), ("act", 1.0, 0.0), ("act", 1.1, 0.0), ("act", 1.2, 0.0),
                   ("act", 2.0, 0.3), ("act", 2.1, 0.3)]  # chunk 2 <- the frame of the tick that sent 1.2
    assert [round(r.stamp_ns * 1e-9, 3) for r in inf.requests] == [0.0, 0.3]
    assert loop.stats.chunk_age_ms == pytest.approx(100.0)


def test_pipelined_stale_hold_forgets_the_chunk_being_computed_and_faults_show_at_once():
    loop, pol = PolicyLoop(T, 0, prefetch=3), ChunkPolicy()
    inf = ManualInference(pol)
    loop.on_state(STATE, 0.0)
    loop.start(0.0)
    assert loop.on_frame(IMG, 0, 0.0, inf, "task").kind == "wait"  # requests chunk 1 from the 0.0 frame
    assert loop.on_timer(0.35, inf, "task").kind == "hold"  # frame 350 ms old: stale, the request is dropped
    inf.finish()  # chunk 1 (from the 0.0 frame) arrives after the hold: ignored  (next tick due at 0.45)
    assert frame_ticks(loop, inf, [0.45, 0.55], finish_after=(0.45,)) == [("wait", 0.0, 0.0), ("act", 2.0, 0.45)]
    pol.h = 0  # the next chunk is empty: a policy failure, seen by the first tick after it, with actions still queued
    inf.finish()
    tick = loop.on_frame(IMG, 650_000_000, 0.65, inf, "task")
    assert tick.kind == "fault" and "shape (0, 7)" in tick.error and loop.state == "faulted"


def test_threaded_inference_never_blocks_a_tick():
    """The policy blocks until released; the ticks before that return at once, and it ran in the worker thread."""
    import threading
    import time

    release, threads = threading.Event(), []

    def slow(image, state, task):
        threads.append(threading.current_thread().name)
        release.wait(10.0)
        return np.full((2, 7), 0.5)

    inf = ThreadedInference(slow)
    try:
        loop = PolicyLoop(T, 0, prefetch=2)
        loop.on_state(STATE, 0.0)
        loop.start(0.0)
        t0 = time.monotonic()
        kinds = [kind for kind, _, _ in frame_ticks(loop, inf, [0.0, 0.1])]
        assert kinds == ["wait", "wait"] and time.monotonic() - t0 < 1.0  # far below the 10 s the policy blocks
        release.set()
        deadline = time.monotonic() + 10.0
        got = []
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
            got = [x for x in frame_ticks(loop, inf, [0.2]) if x[0] == "act"]
        assert got == [("act", 0.5, 0.0)] and threads[0] == "policy-inference"
    finally:
        inf.close()


def test_key_teleop_velocity_and_step():
    k = KeyTeleop(linear_speed=0.05, angular_speed=0.3, key_hold_s=0.15)
    assert k.on_key("w", 0.0) is None and k.on_key("j", 0.0) is None
    np.testing.assert_allclose(k.velocity(0.1), [0.05, 0, 0, 0, 0, 0.3])
    np.testing.assert_allclose(k.action(0.1, fps=10), [0.005, 0, 0, 0, 0, 0.03, 1.0])
    np.testing.assert_allclose(k.velocity(0.2), np.zeros(6))  # 0.2 s after the last press: released
    k.on_key(" ", 0.3)
    assert k.gripper == -1.0 and k.on_key("2", 0.3) == "/recorder/stop"


def test_negative_n_action_steps_or_prefetch_beyond_them_refused():
    with pytest.raises(ValueError, match="n_action_steps=-1"):
        PolicyLoop(T, -1)
    with pytest.raises(ValueError, match=r"prefetch=3 must be in \[0, n_action_steps=2\]"):
        PolicyLoop(T, 2, prefetch=3)
