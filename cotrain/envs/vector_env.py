"""Vector envs over twin tasks, one interface for three backends.

- `ProcessVectorEnv` (physx_cpu): one `EnvRunner` per worker process (ManiSkill's CPU sim holds one env per
  process), torch at 1 thread per worker.
- `SerialVectorEnv` (physx_cpu): the same runners in this process, one after another (tests, N = 1, debugging).
- `CudaVectorEnv` (physx_cuda, in `cuda_vector_env.py`): one process, one ManiSkill env with num_envs = N.
  Unverified: no machine here can download SAPIEN's GPU PhysX library.

All return raw cotrain observations as torch CPU tensors: {IMAGE_KEY: uint8 [N, H, W, 3] (rgb only),
STATE_KEY: float32 [N, 8], "task": list[str]}. `step_chunk(actions[N, H, 7])` returns
(obs, rewards [N, H], terminated [N], truncated [N], info) with info = {"success": bool [N] (at any step of the
chunk), "steps": int [N], "step_s": float [N] (seconds each env spent inside its runner), "final_obs": obs of the
episodes that ended in the chunk (the current obs elsewhere)}.
Finished episodes' statistics (return, length, success, task, seed) accumulate until `pop_episode_stats()`.

The serial and process envs also step a subset of envs on its own: `step_chunk_async(actions, envs)` sends the
chunk to the envs in `envs` (a range) and returns at once; `step_chunk_wait(envs)` collects their results (the rows
of `step_chunk`'s result for those envs). Stage II's collector steps one group of workers while it samples actions
for another.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
import traceback
from typing import Literal, Sequence

import numpy as np
import torch

from cotrain.data.spec import IMAGE_KEY, STATE_KEY, TASK_KEY
from cotrain.envs.config import TaskConfig
from cotrain.envs.episode_domain import check_randomize
from cotrain.envs.robot import ROBOT_UID
from cotrain.envs.runner import ChunkResult, EnvRunner, worker_seed


def collate_obs(obs: Sequence[dict]) -> dict:
    out = {STATE_KEY: torch.from_numpy(np.stack([o[STATE_KEY] for o in obs])), TASK_KEY: [o["task"] for o in obs]}
    if IMAGE_KEY in obs[0]:
        out[IMAGE_KEY] = torch.from_numpy(np.stack([o[IMAGE_KEY] for o in obs]))
    return out


class _RunnerVectorEnv:
    """What the serial and process vector envs share: collating `ChunkResult`s and keeping episode stats."""

    num_envs: int

    def __init__(self) -> None:
        self._episodes: list[dict] = []
        self.instructions: list[str] = []

    def step(self, actions: torch.Tensor | np.ndarray):
        """One control step for every env (renders every step): actions [N, 7]; rewards come back as [N]."""
        obs, rewards, terminated, truncated, info = self.step_chunk(np.asarray(actions)[:, None])
        return obs, rewards[:, 0], terminated, truncated, info

    def step_chunk(self, actions: torch.Tensor | np.ndarray, render_every_step: bool = False):
        everything = range(self.num_envs)
        self.step_chunk_async(actions, everything, render_every_step)
        return self.step_chunk_wait(everything)

    def step_chunk_async(self, actions: torch.Tensor | np.ndarray, envs: range,
                         render_every_step: bool = False) -> None:
        """Start chunk `actions` [len(envs), H, 7] in envs `envs` (a range); `step_chunk_wait(envs)` collects it."""
        actions = np.asarray(actions, dtype=np.float32)
        if envs.step != 1 or not 0 <= envs.start < envs.stop <= self.num_envs:
            raise ValueError(f"step_chunk_async: envs must be a contiguous range within 0..{self.num_envs}, got {envs}")
        if actions.ndim != 3 or actions.shape[0] != len(envs) or actions.shape[2] != 7:
            raise ValueError(f"step_chunk expects actions [{len(envs)} envs, H, 7], got {actions.shape}")
        self._send_chunks(actions, envs, render_every_step)

    def step_chunk_wait(self, envs: range):
        """The `step_chunk` result of envs `envs`, whose chunk `step_chunk_async` started (rows in env order)."""
        results, seconds = zip(*self._receive_chunks(envs))
        self._episodes += [r.episode for r in results if r.episode is not None]
        obs = collate_obs([r.obs for r in results])
        if len(envs) == self.num_envs:
            self.instructions = obs[TASK_KEY]
        info = {
            "success": torch.tensor([r.success for r in results]),
            "steps": torch.tensor([r.steps for r in results]),
            "step_s": torch.tensor(seconds, dtype=torch.float64),
            "final_obs": collate_obs([r.final_obs if r.final_obs is not None else r.obs for r in results]),
        }
        return (obs, torch.from_numpy(np.stack([r.rewards for r in results])),
                torch.tensor([r.terminated for r in results]), torch.tensor([r.truncated for r in results]), info)

    def reset(self, seeds: Sequence[int] | None = None) -> dict:
        """Reset every env (with `seeds[i]` for env i if given, else from its seed stream)."""
        if seeds is not None and len(seeds) != self.num_envs:
            raise ValueError(f"reset expects {self.num_envs} seeds, got {len(seeds)}")
        obs = collate_obs(self._reset([None] * self.num_envs if seeds is None else list(seeds)))
        self.instructions = obs[TASK_KEY]
        return obs

    def pop_episode_stats(self) -> list[dict]:
        episodes, self._episodes = self._episodes, []
        return episodes

    def _reset(self, seeds: list[int | None]) -> list[dict]:
        raise NotImplementedError

    def _send_chunks(self, actions: np.ndarray, envs: range, render_every_step: bool) -> None:
        raise NotImplementedError

    def _receive_chunks(self, envs: range) -> list[tuple[ChunkResult, float]]:
        """(result, seconds inside the runner) per env of `envs`."""
        raise NotImplementedError


def timed_chunk(runner: EnvRunner, actions: np.ndarray, render_every_step: bool) -> tuple[ChunkResult, float]:
    start = time.perf_counter()
    result = runner.step_chunk(actions, render_every_step)
    return result, time.perf_counter() - start


class SerialVectorEnv(_RunnerVectorEnv):
    """N `EnvRunner`s in this process (physx_cpu), stepped one after another."""

    def __init__(self, task_cfg: TaskConfig, domain: str, variation: str, obs_mode: Literal["state", "rgb"],
                 num_envs: int, seed: int, robot_uid: str = ROBOT_UID, randomize: bool = False):
        super().__init__()
        self.num_envs = num_envs
        self.runners = [EnvRunner(task_cfg, domain, variation, obs_mode, worker_seed(seed, i), robot_uid, randomize)
                        for i in range(num_envs)]
        self._pending: dict[int, tuple[np.ndarray, bool]] = {}

    def _reset(self, seeds):
        return [runner.reset(s) for runner, s in zip(self.runners, seeds)]

    def _send_chunks(self, actions, envs, render_every_step):  # stepped when collected, one env after another
        self._pending |= {i: (a, render_every_step) for i, a in zip(envs, actions)}

    def _receive_chunks(self, envs):
        return [timed_chunk(self.runners[i], *self._pending.pop(i)) for i in envs]

    def close(self) -> None:
        for runner in self.runners:
            runner.close()


def _worker(conn, runner_args: tuple) -> None:
    torch.set_num_threads(1)
    try:
        runner = EnvRunner(*runner_args)
        conn.send(("ok", None))
        while True:
            cmd, payload = conn.recv()
            if cmd == "reset":
                conn.send(("ok", runner.reset(payload)))
            elif cmd == "chunk":
                conn.send(("ok", timed_chunk(runner, *payload)))
            elif cmd == "close":
                runner.close()
                conn.send(("ok", None))
                return
    except Exception:  # report to the parent, which raises it with the worker's traceback
        conn.send(("error", traceback.format_exc()))


class ProcessVectorEnv(_RunnerVectorEnv):
    """One `EnvRunner` per worker process (physx_cpu); commands go to all workers before any answer is read."""

    def __init__(self, task_cfg: TaskConfig, domain: str, variation: str, obs_mode: Literal["state", "rgb"],
                 num_envs: int, seed: int, robot_uid: str = ROBOT_UID, randomize: bool = False):
        super().__init__()
        self.num_envs = num_envs
        ctx = mp.get_context("spawn")
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the workers before torch loads there
        self.conns, self.procs = [], []
        for i in range(num_envs):
            parent, child = ctx.Pipe()
            args = (task_cfg, domain, variation, obs_mode, worker_seed(seed, i), robot_uid, randomize)
            proc = ctx.Process(target=_worker, args=(child, args), daemon=True, name=f"twin-env-{i}")
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        self._gather()

    def _send_all(self, cmd: str, payloads: list) -> list:
        for conn, payload in zip(self.conns, payloads):
            conn.send((cmd, payload))
        return self._gather()

    def _gather(self, envs: range | None = None) -> list:
        answers = [conn.recv() for conn in (self.conns if envs is None else self.conns[envs.start:envs.stop])]
        errors = [(i, msg) for i, (status, msg) in enumerate(answers) if status == "error"]
        if errors:
            i, msg = errors[0]
            i += 0 if envs is None else envs.start
            self.close()
            raise RuntimeError(f"vector env worker {i} failed:\n{msg}")
        return [msg for _, msg in answers]

    def _reset(self, seeds):
        return self._send_all("reset", seeds)

    def _send_chunks(self, actions, envs, render_every_step):
        for conn, a in zip(self.conns[envs.start:envs.stop], actions):
            conn.send(("chunk", (a, render_every_step)))

    def _receive_chunks(self, envs):
        return self._gather(envs)

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs):
            if proc.is_alive():
                try:
                    conn.send(("close", None))
                    conn.recv()
                except (BrokenPipeError, EOFError):
                    pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self.conns, self.procs = [], []


def make_env(task_cfg: TaskConfig, domain: str = "sim", obs_mode: Literal["state", "rgb"] = "rgb",
             num_envs: int = 1, seed: int = 0, variation: str = "train",
             backend: Literal["physx_cpu", "physx_cpu_serial", "physx_cuda"] = "physx_cpu",
             robot_uid: str = ROBOT_UID, randomize: bool = False):
    """A vector env of `num_envs` twin envs of `task_cfg.task` in `domain` (`sim` | `real_proxy`).

    `physx_cpu`: one worker process per env; `physx_cpu_serial`: the same in this process (no spawn cost, for
    tests and N = 1); `physx_cuda`: one process, GPU sim (unverified). Unknown domain/variation -> ConfigError.
    `robot_uid`: ROBOT_UID (native CPU maths) or MANISKILL_ROBOT_UID (ManiSkill's torch maths, the reference).
    `randomize`: every episode runs in a domain drawn around `domain` from `task_cfg.randomization`, seeded by its
    episode seed (the training envs: Stage II's rollouts); a ConfigError on the real-proxy. Evaluation leaves it off.
    """
    task_cfg.domain(domain), task_cfg.variation(variation)  # fail here, not inside a worker
    if randomize:
        check_randomize(task_cfg, domain, gpu_sim=backend == "physx_cuda")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if backend == "physx_cpu":
        return ProcessVectorEnv(task_cfg, domain, variation, obs_mode, num_envs, seed, robot_uid, randomize)
    if backend == "physx_cpu_serial":
        return SerialVectorEnv(task_cfg, domain, variation, obs_mode, num_envs, seed, robot_uid, randomize)
    if backend == "physx_cuda":
        from cotrain.envs.cuda_vector_env import CudaVectorEnv

        return CudaVectorEnv(task_cfg, domain, variation, obs_mode, num_envs, seed, robot_uid, randomize)
    raise ValueError(f"backend must be physx_cpu, physx_cpu_serial or physx_cuda, got {backend!r}")
