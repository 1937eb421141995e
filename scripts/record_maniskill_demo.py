"""Record a few ManiSkill PickCube-v1 episodes (random actions, RGB, pd_ee_delta_pose) as .h5/.json.

Used by `make demo` to exercise the ManiSkill importer on a file ManiSkill itself wrote.
    python scripts/record_maniskill_demo.py OUT_DIR [--episodes 2] [--steps 20]
"""

import argparse

import gymnasium as gym
import mani_skill.envs  # noqa: F401  (registers the tasks)
from mani_skill.utils.wrappers.record import RecordEpisode

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--episodes", type=int, default=2)
p.add_argument("--steps", type=int, default=20)
a = p.parse_args()
env = gym.make("PickCube-v1", obs_mode="rgb", control_mode="pd_ee_delta_pose", sim_backend="physx_cpu",
               sensor_configs=dict(width=128, height=128), max_episode_steps=a.steps)
env = RecordEpisode(env, a.out, trajectory_name="pickcube_random", save_video=False, source_type="random")
for ep in range(a.episodes):
    env.reset(seed=ep)
    for _ in range(a.steps):
        env.step(env.action_space.sample())
env.close()
print(f"wrote {a.out}/pickcube_random.h5")
