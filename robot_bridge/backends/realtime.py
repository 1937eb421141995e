"""Which threads of the franka node run at real-time priority: franky's control loop, and nothing else.

`franky.Robot(...)` raises the thread that constructs it to SCHED_FIFO at the highest priority (whatever its
`realtime_config`, where the process may), and a thread starts with its creator's policy. Left so, every thread the
node starts afterwards runs at that priority: the ROS executor's Python workers, which then share the top priority
with the 1 kHz control loop, and which wait on locks held by threads still at normal priority (Fast DDS's, started
before). On franky-sim on 2 cores that inversion stopped the franka node for up to 1.9 s at a time while it held the
interpreter lock in a publish: no state, no command to the arm, no e-stop answer.

So the constructor runs inside `scheduling_restored` (the caller's policy is put back afterwards), and the tracker,
which starts franky's control thread, inside `realtime_scheduling` (that thread inherits the real-time policy; the
caller is put back). Policies are per thread on Linux: `os.sched_setscheduler(0, ...)` changes the calling thread only.
"""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def scheduling_restored():
    """On leaving the block, the calling thread's scheduling policy and priority are what they were on entering it."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        os.sched_setscheduler(0, policy, param)


@contextmanager
def realtime_scheduling():
    """Inside the block the calling thread runs at the highest SCHED_FIFO priority where the process may (threads it
    starts there keep that policy); where it may not, at its own (libfranka's `realtime_config` decides whether that
    is an error). Restored on leaving."""
    with scheduling_restored():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(os.sched_get_priority_max(os.SCHED_FIFO)))
        except PermissionError:
            pass
        yield
