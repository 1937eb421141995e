"""The ManiSkill real-proxy twin as the arm and its camera: deploy a checkpoint through ROS end to end.

    connect()   make_task_env(load_task_config(twin_env), domain="real_proxy", obs_mode="rgb"), reset once
                (compiles the shaders, gives `read` a state); no frame is offered yet
    start()     env.reset(seed=twin_seed + episode): a new episode and its first frame
    read()      TCP pose / fingers of the env's agent, base frame (the same numbers as `cotrain.envs.robot.ee_state`)
    reference_xyz()  the measured TCP position (the env applies deltas to the current pose: pd_ee_delta_pose)
    apply(a)    env.step(a) once per command: the env is the clock; the new frame is offered by `frame()`
    hold()      env.step(zero motion, last gripper)
    frame()     the latest (image, reading, instruction) with a sequence number; the franka node publishes each new
                one on /camera/image_raw, /franka/ee_pose + /franka/joint_states (one stamp) and /task
Once the env terminates or truncates, the episode is over: `apply`/`hold` step nothing and no frame follows, so the
policy node (paced by frames) sends nothing more; `episode` says how it ended (the franka node's status carries it).
The env clips each action axis itself (±0.1 m, ±0.3 rad, gripper ±1), exactly as in `cotrain.eval`.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from cotrain.data.spec import IMAGE_KEY
from robot_bridge.backends.base import ArmBackend, ArmReading
from robot_bridge.params import FrankaParams

DOMAIN = "real_proxy"


@dataclass(frozen=True)
class TwinFrame:
    seq: int
    """Increases with every new frame (0 = the connect-time state, never published as a frame)."""
    image: np.ndarray
    """uint8 HxWx3 from the env's camera."""
    reading: ArmReading
    instruction: str


@dataclass(frozen=True)
class EpisodeInfo:
    index: int
    """Episodes started since connect (0-based)."""
    seed: int
    instruction: str
    steps: int = 0
    ret: float = 0.0
    done: bool = False
    success: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def reading_from_agent(agent) -> ArmReading:
    """ArmReading (quaternion x, y, z, w) of the TCP in the robot base frame, from a ManiSkill Panda."""
    tcp_at_base = agent.robot.pose.inv() * agent.tcp.pose
    p = tcp_at_base.p[0].double().cpu().numpy()
    w, x, y, z = tcp_at_base.q[0].double().cpu().numpy()
    qpos = agent.robot.get_qpos()[0].double().cpu().numpy()
    return ArmReading(xyz=p, quat=np.array([x, y, z, w]), q=qpos[:7], fingers=qpos[-2:])


class TwinBackend(ArmBackend):
    def __init__(self, p: FrankaParams) -> None:
        if not p.twin_env:
            raise ValueError("franka.twin_env is empty: give a task config name (configs/task) or a yaml path")
        self.p = p
        self.env = None
        self._lock = threading.Lock()
        self._frame: TwinFrame | None = None
        self._episode: EpisodeInfo | None = None
        self._episodes = 0
        self._gripper = 1.0
        self._started = False

    # ---- connection ---------------------------------------------------------------------------------
    def connect(self) -> None:
        from cotrain.envs import load_task_config, make_task_env

        self.env = make_task_env(load_task_config(self.p.twin_env), domain=DOMAIN, obs_mode="rgb")
        obs, _ = self.env.reset(seed=self.p.twin_seed)
        self._set_frame(obs, seq=0)

    def close(self) -> None:
        self.stop()
        if self.env is not None:
            self.env.close()
            self.env = None

    # ---- state --------------------------------------------------------------------------------------
    def read(self) -> ArmReading:
        return self._frame.reading

    def reference_xyz(self) -> np.ndarray:
        return self._frame.reading.xyz

    def frame(self) -> TwinFrame | None:
        return self._frame

    @property
    def episode(self) -> EpisodeInfo | None:
        return self._episode

    def inspect(self, fn, seq: int):
        """`fn(env, episode)` under the env's lock if frame `seq` is still the current one (nothing has stepped the env
        since) and its episode goes on; None otherwise. For a scripted operator that looks at the simulated scene."""
        with self._lock:
            ep = self._episode
            if self._frame is None or self._frame.seq != seq or ep is None or ep.done or not self._started:
                return None
            return fn(self.env, ep)

    @property
    def in_control(self) -> bool:
        return self._started

    # ---- control ------------------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            seed = self.p.twin_seed + self._episodes
            obs, _ = self.env.reset(seed=seed)
            self._episode = EpisodeInfo(self._episodes, seed, self.env.instructions[0])
            self._episodes += 1
            self._gripper = 1.0
            self._started = True
            self._set_frame(obs, seq=self._frame.seq + 1)

    def apply(self, action: np.ndarray) -> None:
        self._step(np.asarray(action, dtype=np.float32))

    def hold(self) -> None:
        self._step(np.array([0, 0, 0, 0, 0, 0, self._gripper], dtype=np.float32))

    def stop(self) -> None:
        self._started = False

    # ---- helpers ------------------------------------------------------------------------------------
    def _step(self, action: np.ndarray) -> None:
        with self._lock:
            ep = self._episode
            if not self._started or ep is None or ep.done:
                return  # the episode is over: the arm rests until the next start
            obs, reward, terminated, truncated, info = self.env.step(torch.as_tensor(action[None]))
            self._gripper = float(action[6])
            done = bool(terminated[0]) or bool(truncated[0])
            self._episode = replace(ep, steps=ep.steps + 1, ret=ep.ret + float(reward[0]), done=done,
                                    success=bool(info["success"][0]))
            # the frame after the last step is not offered: nothing may answer it
            self._set_frame(obs, seq=self._frame.seq + (0 if done else 1))

    def _set_frame(self, obs: dict, seq: int) -> None:
        image = obs[IMAGE_KEY][0].cpu().numpy().astype(np.uint8)
        self._frame = TwinFrame(seq, image, reading_from_agent(self.env.agent), self.env.instructions[0])
