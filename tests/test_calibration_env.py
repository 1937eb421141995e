"""The real-proxy env applies its camera effects to observations; the twin's render for calibration (SAPIEN, CPU)."""

import numpy as np
import pytest

from cotrain.calibration.camera_effects import apply_camera_effects
from cotrain.calibration.twin_render import env_camera, render_labelled, show_empty_scene_at_home
from cotrain.data.spec import IMAGE_KEY
from cotrain.envs import load_task_config, make_task_env


@pytest.fixture(scope="module")
def real_env():
    env = make_task_env(load_task_config("pick_place"), "real_proxy", obs_mode="rgb")
    yield env
    env.close()


def test_real_proxy_frames_are_the_render_through_the_camera_effects(real_env):
    obs, _ = real_env.reset(seed=5)
    frame = obs[IMAGE_KEY][0].numpy()
    raw = real_env._get_obs_sensor_data()["main"]["rgb"][0].numpy()
    expected = apply_camera_effects(raw, real_env.domain.camera_effects, seed=5, step=0)
    assert np.array_equal(frame, expected)
    assert not np.array_equal(frame, raw)
    again, _ = real_env.reset(seed=5)
    assert np.array_equal(again[IMAGE_KEY][0].numpy(), frame)


def test_render_labelled_puts_the_points_where_the_camera_sees_them(real_env):
    from cotrain.calibration.camera_pose import splat_labels

    real_env.reset(seed=0)
    show_empty_scene_at_home(real_env)
    world, seg, rgb = render_labelled(real_env)
    assert world.shape == rgb.shape and seg.shape == rgb.shape[:2]
    robot_ids = {int(link.per_scene_id[0]) for link in real_env.agent.robot.get_links()}
    assert robot_ids & set(np.unique(seg).tolist())  # the robot at home is in view
    h, w = seg.shape
    again = splat_labels(world.reshape(-1, 3), seg.ravel(), env_camera(real_env), h, w)
    assert (again == seg).mean() > 0.99


def test_dynamics_estimates_on_real_proxy_episodes():
    """Expert episodes (states and commanded actions, what a real demo records): the latency is exact in the sim and
    in the real-proxy without its jitter, whose end-effector lag shows as a larger β than the twin controller's own
    response. With the jitter (delays of 1 or 2 steps, superseded commands dropped) no fixed latency and lag fit:
    the latency lands within the delays and the response's residual grows tenfold. Measured (4 episodes each): sim
    0 steps, β 0.131 (residual 0.005); without jitter 1 step, β 0.209 (0.018); with it 2 steps, β −0.135 (0.275)."""
    import dataclasses

    from cotrain.calibration.latency import estimate_latency
    from cotrain.calibration.response import estimate_response
    from cotrain.envs import make_expert, run_expert_episode

    cfg = load_task_config("pick_place")
    steady = dataclasses.replace(cfg.domain("real_proxy"), action_latency_jitter_steps=0)
    cfg = dataclasses.replace(cfg, domains={**cfg.domains, "steady": steady})
    found = {}
    for domain in ("sim", "steady", "real_proxy"):
        env = make_task_env(cfg, domain, obs_mode="state")
        expert = make_expert("pick_place", env.domain)
        episodes = [run_expert_episode(env, expert, seed).frames for seed in range(4)]
        env.close()
        actions = [np.stack([f["action"] for f in frames]) for frames in episodes]
        states = [np.stack([f["state"] for f in frames]) for frames in episodes]
        latency = estimate_latency(actions, states, max_lag=4)
        found[domain] = (latency.steps, estimate_response(actions, states, latency.steps))
    assert found["sim"][0] == 0 and found["steady"][0] == 1  # the real-proxy's configured latency: 1 step
    assert found["steady"][1].beta > found["sim"][1].beta + 0.05
    assert found["sim"][1].residual < 0.05 and found["steady"][1].residual < 0.05
    assert found["real_proxy"][0] in (1, 2) and found["real_proxy"][1].residual > 0.1
