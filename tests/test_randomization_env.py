"""Per-episode domain randomisation in the twin envs (`TwinTaskEnv(randomize=True)`): what each seed draws is what
the simulator shows (colours, light, camera, friction, mass, latency), zero ranges change nothing, the real-proxy and
evaluation are never randomised."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import sapien
import torch

from cotrain.calibration.randomization import RandomizationRanges, sample_domain
from cotrain.data.spec import IMAGE_KEY, STATE_KEY
from cotrain.envs import ConfigError, load_task_config, make_env, make_task_env
from cotrain.envs.base import CAMERA_NAME, camera_pose
from cotrain.envs.drawer import JOINT_FRICTION
from cotrain.envs.episode_domain import check_randomize
from cotrain.envs.pool import EnvPool

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mani_skill"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:sapien"),
]

RANGES = RandomizationRanges(light_scale=0.2, color=0.1, camera_eye=0.02, camera_target=0.02, friction=0.3,
                             mass_scale=0.3, latency_steps=2)
HOLD = np.array([0, 0, 0, 0, 0, 0, 1], dtype=np.float32)
MOVE_X = np.array([0.05, 0, 0, 0, 0, 0, 1], dtype=np.float32)


def task(name: str = "pick_place", ranges: RandomizationRanges = RANGES, **sim_changes):
    """The task config with small images, `ranges`, and its sim domain changed by `sim_changes`."""
    cfg = load_task_config(name)
    sim = dataclasses.replace(cfg.domain("sim"), **sim_changes)
    return dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, width=32, height=32),
                               domains={**cfg.domains, "sim": sim}, randomization=ranges)


def base_colors(body) -> np.ndarray:
    """The base colour of each visual shape of an actor, [shapes, 4]."""
    render = body._bodies[0].entity.find_component_by_type(sapien.render.RenderBodyComponent)
    return np.array([s.material.base_color for s in render.render_shapes])


def friction(body) -> float:
    return body._bodies[0].collision_shapes[0].physical_material.static_friction


@pytest.fixture(scope="module")
def state_envs():
    envs = {"random": make_task_env(task(), "sim", obs_mode="state", randomize=True),
            "fixed": make_task_env(task(), "sim", obs_mode="state", randomize=False)}
    yield envs
    for env in envs.values():
        env.close()


# ----------------------------------------------------------------------------- which domains
def test_real_proxy_is_never_randomised():
    cfg = task()
    with pytest.raises(ConfigError, match=r"randomize=True on domain 'real_proxy'"):
        make_task_env(cfg, "real_proxy", obs_mode="state", randomize=True)
    with pytest.raises(ConfigError, match=r"'real_proxy'"):  # before any worker starts
        make_env(cfg, "real_proxy", obs_mode="state", randomize=True)
    with pytest.raises(ConfigError, match=r"'real_proxy'"):
        EnvPool(cfg, "real_proxy", workers=1, randomize=True)


def test_gpu_simulation_refuses_ranges_it_cannot_vary_per_sub_scene():
    with pytest.raises(ConfigError, match=r"randomization.color, camera_eye, camera_target, friction, mass_scale"):
        check_randomize(task(), "sim", gpu_sim=True)
    check_randomize(task(ranges=RandomizationRanges(light_scale=0.2, latency_steps=1)), "sim", gpu_sim=True)
    check_randomize(task(), "sim", gpu_sim=False)


def test_without_randomize_the_ranges_are_ignored(state_envs):
    env = state_envs["fixed"]
    for seed in (0, 1):
        env.reset(seed=seed)
        assert env.episode_domains[0] == env.domain
        assert friction(env.objects[0]) == pytest.approx(1.0)
        assert env.objects[0]._bodies[0].mass == pytest.approx(500.0 * 0.04**3)  # DENSITY × a 4 cm cube


# ----------------------------------------------------------------------------- physics and latency
def test_friction_and_mass_follow_the_seed(state_envs):
    env = state_envs["random"]
    seen = {}
    for seed in (0, 1, 0):
        env.reset(seed=seed)
        drawn = sample_domain(env.domain, RANGES, seed)
        assert env.episode_domains[0] == drawn
        cube = env.objects[0]
        values = (friction(cube), friction(env.table), friction(env.tray), cube._bodies[0].mass)
        assert values == pytest.approx((drawn.friction,) * 3 + (500.0 * 0.04**3 * drawn.mass_scale,))
        seen.setdefault(seed, values)
        assert values == seen[seed]  # the same seed again: the same values
    assert seen[0][0] != pytest.approx(seen[1][0]) and seen[0][3] != pytest.approx(seen[1][3])


def test_randomisation_leaves_the_episode_rng_alone(state_envs):
    """The same seed starts the same scene (objects, robot) with and without randomisation."""
    for seed in (2, 3):
        obs = {k: env.reset(seed=seed)[0][STATE_KEY] for k, env in state_envs.items()}
        torch.testing.assert_close(obs["random"], obs["fixed"], rtol=0, atol=0)
        torch.testing.assert_close(state_envs["random"].scene_labels(), state_envs["fixed"].scene_labels(),
                                   rtol=0, atol=0)


def latency_seeds(ranges: RandomizationRanges, domain, wanted: tuple[int, ...]) -> dict[int, int]:
    """The first seed that draws each wanted latency."""
    found = {}
    for seed in range(200):
        found.setdefault(sample_domain(domain, ranges, seed).action_latency_steps, seed)
    return {lat: found[lat] for lat in wanted}


def test_latency_is_drawn_per_episode_and_delays_the_tcp(state_envs):
    """Latency 0 + [−2, 2] (at least 0): a move commanded at the first step shows in the TCP at step latency + 1."""
    env = state_envs["random"]
    for latency, seed in latency_seeds(RANGES, env.domain, (0, 1, 2)).items():
        obs, _ = env.reset(seed=seed)
        assert int(env._latency[0]) == latency
        x = [float(obs[STATE_KEY][0, 0])]
        for action in (MOVE_X, HOLD, HOLD, HOLD):
            obs, *_ = env.step(action)
            x.append(float(obs[STATE_KEY][0, 0]))
        dx = np.diff(x)
        assert dx[latency] > 0.02, (latency, dx)
        assert np.all(np.abs(np.delete(dx, latency)) < 0.015), (latency, dx)


def test_drawer_joint_friction_and_link_mass_follow_the_seed():
    fixed = make_task_env(task("open_drawer"), "sim", obs_mode="state")
    built = fixed.drawer_link._bodies[0].mass  # at the sim domain's mass scale, 1
    fixed.close()
    env = make_task_env(task("open_drawer"), "sim", obs_mode="state", randomize=True)
    try:
        for seed in (0, 1):
            env.reset(seed=seed)
            drawn = sample_domain(env.domain, RANGES, seed)
            assert env.cabinet.active_joints[0]._objs[0].friction == pytest.approx(JOINT_FRICTION * drawn.friction)
            assert friction(env.drawer_link) == pytest.approx(drawn.friction)
            assert env.drawer_link._bodies[0].mass == pytest.approx(built * drawn.mass_scale, rel=1e-5)
            env.step(HOLD)  # PhysX takes the changed bodies
    finally:
        env.close()


def test_an_unseeded_reset_draws_a_fresh_domain(state_envs):
    env = state_envs["random"]
    env.reset(seed=0)
    drawn = []
    for _ in range(2):
        env.reset()
        drawn.append(env.episode_domains[0])
    assert drawn[0] != drawn[1] and sample_domain(env.domain, RANGES, 0) not in drawn


# ----------------------------------------------------------------------------- what the camera sees
@pytest.mark.sapien
def test_zero_ranges_change_nothing():
    """Ranges of zero width (every shipped task config): frames and states bit-identical to randomize=False."""
    cfg = task(ranges=RandomizationRanges())
    envs = [make_task_env(cfg, "sim", obs_mode="rgb", randomize=r) for r in (False, True)]
    try:
        actions = np.random.default_rng(0).normal(0, 0.03, (3, 7)).astype(np.float32)
        for seed in (4, 5):
            obs = [env.reset(seed=seed)[0] for env in envs]
            for a in actions:
                for key in (IMAGE_KEY, STATE_KEY):
                    assert torch.equal(obs[0][key], obs[1][key])
                assert torch.equal(envs[0].get_state(), envs[1].get_state())
                obs = [env.step(a)[0] for env in envs]
    finally:
        for env in envs:
            env.close()


@pytest.mark.sapien
def test_a_randomised_episode_shows_its_drawn_domain():
    """Table, tray and object colours, light and the camera's pose read back from the renderer are the seed's draw,
    and its first frame is the one a scene built in that drawn domain renders."""
    cfg = task()
    env = make_task_env(cfg, "sim", obs_mode="rgb", randomize=True)
    try:
        seen = {}
        for seed in (0, 1, 0):
            obs, _ = env.reset(seed=seed)
            drawn = sample_domain(env.domain, RANGES, seed)
            color = env.instructions[0].split()[2]  # "put the <colour> <shape> in the tray"
            obj = env.objects[int(env._shape_idx[0])]
            lights = env.scene.sub_scenes[0].render_system
            directional = [light.color for light in lights.lights
                           if isinstance(light, sapien.render.RenderDirectionalLightComponent)]
            camera = env._sensors[CAMERA_NAME].camera.get_local_pose().raw_pose[0]
            np.testing.assert_allclose(base_colors(env.table), [drawn.table_rgba], rtol=1e-6)
            np.testing.assert_allclose(base_colors(env.tray), [drawn.palette["tray"]] * 5, rtol=1e-6)  # floor, 4 walls
            np.testing.assert_allclose(base_colors(obj), [drawn.palette[color]], rtol=1e-6)
            np.testing.assert_allclose(lights.ambient_light, drawn.ambient_light, rtol=1e-6)
            np.testing.assert_allclose(directional, [drawn.light_color], rtol=1e-6)
            torch.testing.assert_close(camera, camera_pose(cfg.camera, drawn).raw_pose[0])
            seen.setdefault(seed, (base_colors(env.table), camera, obs[IMAGE_KEY]))
            assert np.array_equal(base_colors(env.table), seen[seed][0]) and torch.equal(camera, seen[seed][1])
            assert torch.equal(obs[IMAGE_KEY], seen[seed][2])  # the same seed again: the same frame
        assert not np.allclose(seen[0][0], seen[1][0]) and not torch.allclose(seen[0][1], seen[1][1])

        drawn = sample_domain(env.domain, RANGES, 0)
        built = make_task_env(dataclasses.replace(cfg, domains={**cfg.domains, "sim": drawn}), "sim",
                              obs_mode="rgb", randomize=False)
        try:
            frame = built.reset(seed=0)[0][IMAGE_KEY]
        finally:
            built.close()
        assert torch.equal(frame, seen[0][2])
    finally:
        env.close()


@pytest.mark.sapien
def test_the_camera_range_moves_the_frame_not_the_scene():
    cfg = task(ranges=RandomizationRanges(camera_eye=0.03, camera_target=0.03))
    envs = {r: make_task_env(cfg, "sim", obs_mode="rgb", randomize=r) for r in (False, True)}
    try:
        obs = {r: env.reset(seed=6)[0] for r, env in envs.items()}
        torch.testing.assert_close(envs[True].scene_labels(), envs[False].scene_labels(), rtol=0, atol=0)
        assert torch.equal(obs[True][STATE_KEY], obs[False][STATE_KEY])
        assert (obs[True][IMAGE_KEY].float() - obs[False][IMAGE_KEY].float()).abs().mean() > 2
    finally:
        for env in envs.values():
            env.close()
