"""The real-proxy's camera effects (cotrain.calibration.camera_effects), with hand-worked numbers."""

import numpy as np
import pytest

from cotrain.calibration.camera_effects import (CameraEffects, apply_camera_effects, gaussian_blur,
                                                normalised_radius, radial_distortion, sensor_noise, vignette,
                                                white_balance_gamma)
from cotrain.envs.config import ConfigError, TaskConfig, load_task_config


def frame(value=128, h=4, w=6):
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_zero_settings_are_the_identity():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(8, 10, 3), dtype=np.uint8)
    assert apply_camera_effects(img, CameraEffects(), seed=3, step=4) is img
    for fn, arg in ((vignette, 0.0), (radial_distortion, 0.0), (gaussian_blur, 0.0)):
        assert np.array_equal(fn(img.astype(float), arg), img)
    assert np.array_equal(sensor_noise(img.astype(float), 0.0, 1, 2), img)
    assert np.array_equal(white_balance_gamma(img.astype(float), (1.0, 1.0, 1.0), 1.0), img)


def test_gamma_and_white_balance_on_a_known_pixel():
    # gamma 2: 255 * (128/255)^2 = 64.25 -> 64 ; white balance R×1.5: 128 -> 192, then gamma 1
    out = apply_camera_effects(frame(128), CameraEffects(gamma=2.0), 0, 0)
    assert (out == 64).all()
    out = apply_camera_effects(frame(128), CameraEffects(white_balance=(1.5, 1.0, 0.5)), 0, 0)
    assert out[0, 0].tolist() == [192, 128, 64]
    # the gain saturates before the tone curve: 200 * 1.5 = 300 -> 255
    assert apply_camera_effects(frame(200), CameraEffects(white_balance=(1.5, 1.0, 1.0)), 0, 0)[0, 0, 0] == 255


def test_vignette_factor_at_centre_and_corner():
    # 2x2 image: every pixel centre is at (±0.5, ±0.5) px from the centre; half-diagonal = sqrt(2) -> radius 0.5
    out = vignette(np.full((2, 2, 3), 200.0), 0.4)
    assert np.allclose(out, 200.0 * (1 - 0.4 * 0.25))  # 180
    # 64x64: corner pixel centre at 31.5*sqrt(2) px from the centre, half-diagonal 32*sqrt(2): radius 31.5/32
    _, _, r = normalised_radius(64, 64)
    assert r[0, 0] == pytest.approx(31.5 / 32)
    out = vignette(np.full((64, 64, 3), 100.0), 0.25)
    assert out[0, 0, 0] == pytest.approx(100 * (1 - 0.25 * (31.5 / 32) ** 2))
    # pixel (32, 32): centre 0.5 px off in x and y, r² = 2·0.5² / (32·√2)² = (0.5/32)²
    assert out[32, 32, 0] == pytest.approx(100 * (1 - 0.25 * (0.5 / 32) ** 2))


def test_noise_is_reproducible_from_seed_and_step():
    img = frame(128, 16, 16)
    fx = CameraEffects(noise_std=0.02)
    a, b = apply_camera_effects(img, fx, 7, 3), apply_camera_effects(img, fx, 7, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, apply_camera_effects(img, fx, 7, 4))
    assert not np.array_equal(a, apply_camera_effects(img, fx, 8, 3))
    # the std of the noise is 0.02 * 255 = 5.1 grey levels
    assert np.std(a.astype(float) - 128) == pytest.approx(5.1, rel=0.1)


def test_blur_keeps_a_flat_frame_and_spreads_an_edge():
    assert np.allclose(gaussian_blur(np.full((5, 5, 3), 77.0), 1.0), 77.0)
    step = np.zeros((1, 8, 1))
    step[:, 4:] = 100.0
    out = gaussian_blur(step, 1.0)[0, :, 0]
    # the pixels either side of the edge are symmetric about 50 and move towards it
    assert out[3] + out[4] == pytest.approx(100.0)
    assert 0 < out[3] < 50 < out[4] < 100


def test_radial_distortion_keeps_the_centre_and_pulls_in_the_corners():
    h = w = 33
    img = np.zeros((h, w, 1))
    img[16, 16] = 1.0
    out = radial_distortion(img, 0.2)
    assert out[16, 16, 0] == pytest.approx(1.0)  # the centre pixel is at radius 0: it samples itself
    ramp = np.tile(np.arange(w, dtype=float)[None, :, None], (h, 1, 1))
    out = radial_distortion(ramp, 0.2)
    # on the middle row at x = 32 (u = 16/half_diag), the source is x = 16 + 16*(1 + 0.2*u^2)
    u = 16 / (0.5 * np.hypot(h, w))
    assert out[16, 32, 0] == pytest.approx(min(16 + 16 * (1 + 0.2 * u**2), 32))
    assert out[16, 24, 0] > 24  # barrel: an off-centre pixel shows content from further out


def test_bad_settings_are_one_config_error():
    with pytest.raises(ConfigError, match="vignette"):
        CameraEffects(vignette=1.2)
    with pytest.raises(ConfigError, match="gamma"):
        CameraEffects(gamma=0.0)


def test_the_real_proxy_has_camera_effects_and_the_sim_none():
    for task in ("pick_place", "push_cube", "open_drawer", "close_drawer"):
        cfg = load_task_config(task)
        assert cfg.domain("sim").camera_effects == CameraEffects()
        assert cfg.domain("real_proxy").camera_effects != CameraEffects()


def test_an_unknown_camera_effects_key_is_rejected():
    import yaml
    from cotrain.envs.config import TASK_CONFIG_DIR

    data = yaml.safe_load((TASK_CONFIG_DIR / "pick_place.yaml").read_text())
    data["domains"]["real_proxy"]["camera_effects"]["lens_flare"] = 1.0
    with pytest.raises(ConfigError, match="lens_flare"):
        TaskConfig.from_dict(data)


def test_end_effector_lag_filters_the_executed_commands(monkeypatch):
    """τ = 0.1/ln 2 s at 10 Hz: β = 0.5, so one Δx = 0.04 command executes as 0.02, then 0.01, 0.005 (a first-order
    lag on the target), the gripper unfiltered; a reset clears the lag."""
    import dataclasses
    import math

    from mani_skill.envs.sapien_env import BaseEnv

    from cotrain.envs import make_task_env
    from cotrain.envs.base import ee_lag_beta

    assert ee_lag_beta(0.1 / math.log(2), 0.1) == pytest.approx(0.5) and ee_lag_beta(0.0, 0.1) == 0.0
    cfg = load_task_config("pick_place")
    lagged = dataclasses.replace(cfg.domain("sim"), ee_lag_time_constant=0.1 / math.log(2))
    cfg = dataclasses.replace(cfg, domains={**cfg.domains, "lagged": lagged})
    env = make_task_env(cfg, "lagged", obs_mode="state")
    executed = []
    original = BaseEnv._step_action
    monkeypatch.setattr(BaseEnv, "_step_action",
                        lambda self, a: executed.append(a[0].clone().numpy()) or original(self, a))
    env.reset(seed=0)
    env.step(np.array([0.04, 0, 0, 0, 0, 0.2, -1.0], np.float32))
    for _ in range(2):
        env.step(np.array([0, 0, 0, 0, 0, 0, -1.0], np.float32))
    assert [round(float(a[0]), 6) for a in executed] == [0.02, 0.01, 0.005]
    assert [round(float(a[5]), 6) for a in executed] == [0.1, 0.05, 0.025]
    assert all(a[6] == -1.0 for a in executed)
    env.reset(seed=0)
    env.step(np.array([0.04, 0, 0, 0, 0, 0, 1.0], np.float32))
    assert round(float(executed[-1][0]), 6) == 0.02
    env.close()


def test_the_real_proxy_lags_and_the_sim_does_not():
    for task in ("pick_place", "push_cube", "open_drawer", "close_drawer"):
        cfg = load_task_config(task)
        assert cfg.domain("sim").ee_lag_time_constant == 0.0
        assert cfg.domain("real_proxy").ee_lag_time_constant > 0.0
    with pytest.raises(ConfigError, match="ee_lag_time_constant"):
        import dataclasses

        dataclasses.replace(load_task_config("pick_place").domain("sim"), ee_lag_time_constant=-0.1)


# ----------------------------------------------------------------------------- latency jitter
class ScriptedJitter:
    """Stands in for the episode RNG: `randint` returns the scripted jitter of each command in turn."""

    def __init__(self, extras):
        self.extras = list(extras)

    def randint(self, low, high):
        extra = self.extras.pop(0)
        assert low <= extra < high
        return np.array([extra])


def executed_commands(monkeypatch, domain_changes: dict, commands, extras=None, seed=0):
    """Run `commands` (float32[7] each) on pick_place's sim domain with `domain_changes`; the executed actions."""
    import dataclasses

    from mani_skill.envs.sapien_env import BaseEnv

    from cotrain.envs import make_task_env

    cfg = load_task_config("pick_place")
    domain = dataclasses.replace(cfg.domain("sim"), **domain_changes)
    env = make_task_env(dataclasses.replace(cfg, domains={**cfg.domains, "test": domain}), "test", obs_mode="state")
    executed = []
    original = BaseEnv._step_action
    monkeypatch.setattr(BaseEnv, "_step_action",
                        lambda self, a: executed.append(a[0].clone().numpy()) or original(self, a))
    env.reset(seed=seed)
    if extras is not None:
        env.unwrapped._batched_episode_rng = ScriptedJitter(extras)
    for c in commands:
        env.step(c)
    env.close()
    return np.stack(executed)


def command(i: int, gripper: float) -> np.ndarray:
    """Command i: Δx = i + 1 mm (names the command in the executed sequence)."""
    return np.array([0.001 * (i + 1), 0, 0, 0, 0, 0, gripper], np.float32)


def test_jitter_executes_the_newest_arrival_in_order_and_holds_otherwise(monkeypatch):
    """Latency 0, jitter up to 3; commands c0..c6 sent at steps 0..6 draw delays 1, 3, 1, 3, 0, 0, 1.
    Arrivals (in order: never before the previous command): c0 1, c1 4, c2 max(3, 4) = 4, c3 6, c4 max(4, 6) = 6,
    c5 max(5, 6) = 6, c6 7. Steps 0..6 execute: hold (gripper open), c0, hold, hold, c2 (c1 superseded), hold,
    c5 (c3 and c4 superseded); a hold keeps the last executed gripper command."""
    grippers = [-1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0]
    commands = [command(i, g) for i, g in enumerate(grippers)]
    executed = executed_commands(monkeypatch, dict(action_latency_jitter_steps=3), commands,
                                 extras=[1, 3, 1, 3, 0, 0, 1])
    assert np.round(executed[:, 0] * 1000).astype(int).tolist() == [0, 1, 0, 0, 3, 0, 6]
    assert executed[:, 6].tolist() == [1.0, -1.0, -1.0, -1.0, -1.0, -1.0, 1.0]
    assert np.all(executed[:, 1:6] == 0)


def test_jitter_on_top_of_latency(monkeypatch):
    """Latency 1, jitter 1: delays 1 + (0, 1, 1, 0) -> arrivals 1, 3, 4, max(4, 4) = 4; steps 0..4 execute
    hold, c0, hold, c1, c3 (c2 superseded)."""
    commands = [command(i, -1.0) for i in range(5)]
    executed = executed_commands(monkeypatch, dict(action_latency_steps=1, action_latency_jitter_steps=1), commands,
                                 extras=[0, 1, 1, 0, 1])
    assert np.round(executed[:, 0] * 1000).astype(int).tolist() == [0, 1, 0, 2, 4]


def test_without_jitter_a_fixed_delay_and_no_draws(monkeypatch):
    """Jitter 0 (every shipped sim domain): latency 2 executes hold, hold, c0, c1, c2 (the twin's fixed delay), and
    the episode RNG is never drawn from (`ScriptedJitter` with no values would fail if it were)."""
    commands = [command(i, -1.0) for i in range(5)]
    executed = executed_commands(monkeypatch, dict(action_latency_steps=2), commands, extras=[])
    assert np.round(executed[:, 0] * 1000).astype(int).tolist() == [0, 0, 1, 2, 3]
    assert executed[:, 6].tolist() == [1.0, 1.0, -1.0, -1.0, -1.0]


def test_jitter_draws_are_reproducible_per_seed_and_stay_in_range(monkeypatch):
    """Latency 1, jitter 1 from the episode RNG: the same seed gives the same executed sequence, another seed another
    one; every executed command was sent 1 or 2 steps before, and the commands run in the order sent."""
    commands = [command(i, -1.0) for i in range(30)]
    changes = dict(action_latency_steps=1, action_latency_jitter_steps=1)
    runs = [executed_commands(monkeypatch, changes, commands, seed=s) for s in (3, 3, 4)]
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])
    for executed in runs:
        sent = np.round(executed[:, 0] * 1000).astype(int) - 1  # index of the executed command, -1: hold
        steps = np.flatnonzero(sent >= 0)
        assert set((steps - sent[steps]).tolist()) <= {1, 2}
        assert np.all(np.diff(sent[steps]) > 0)
        assert 0 < (sent < 0).sum() < len(sent) // 2  # some steps hold, most execute


def test_the_real_proxy_jitters_and_the_sim_does_not():
    for task in ("pick_place", "push_cube", "open_drawer", "close_drawer"):
        cfg = load_task_config(task)
        assert cfg.domain("sim").action_latency_jitter_steps == 0
        assert cfg.domain("real_proxy").action_latency_jitter_steps == 1
    import dataclasses

    with pytest.raises(ConfigError, match="action_latency_jitter_steps"):
        dataclasses.replace(load_task_config("pick_place").domain("sim"), action_latency_jitter_steps=-1)


# ----------------------------------------------------------------------------- geometry differences
def collision_half_sizes(actor) -> list[np.ndarray]:
    import sapien

    body = actor._objs[0].find_component_by_type(sapien.physx.PhysxRigidBaseComponent)
    return [np.asarray(s.half_size) for s in body.collision_shapes if isinstance(s, sapien.physx.PhysxCollisionShapeBox)]


def test_the_real_proxy_builds_larger_objects_and_higher_tray_walls():
    from cotrain.envs import make_task_env
    from cotrain.envs.pick_place import SHAPES, TRAY_HEIGHT
    from cotrain.envs.push_cube import CUBE_HALF

    cfg = load_task_config("pick_place")
    for domain, scale, walls in (("sim", 1.0, 1.0), ("real_proxy", 1.08, 1.15)):
        env = make_task_env(cfg, domain, obs_mode="state").unwrapped
        assert cfg.domain(domain).object_size_scale == scale and cfg.domain(domain).tray_wall_scale == walls
        cube = env.objects[env.shape_names.index("cube")]
        assert np.allclose(collision_half_sizes(cube)[0], np.multiply(SHAPES["cube"].size, scale))
        assert env.shapes["cylinder"].size == pytest.approx(tuple(s * scale for s in SHAPES["cylinder"].size))
        wall_heights = [2 * h[2] for h in collision_half_sizes(env.tray)]
        assert max(wall_heights) == pytest.approx(TRAY_HEIGHT * walls)
        env.reset(seed=0)
        assert float(env.obj.pose.p[0, 2]) == pytest.approx(env.shape[0].half_height, abs=3e-3)  # resting
        env.close()
    cfg = load_task_config("push_cube")
    for domain, scale in (("sim", 1.0), ("real_proxy", 1.05)):
        env = make_task_env(cfg, domain, obs_mode="state").unwrapped
        assert env.cube_half == pytest.approx(CUBE_HALF * scale)
        assert np.allclose(collision_half_sizes(env.cubes[0])[0], CUBE_HALF * scale)
        env.close()
    import dataclasses

    for name in ("object_size_scale", "tray_wall_scale"):
        with pytest.raises(ConfigError, match=name):
            dataclasses.replace(load_task_config("pick_place").domain("sim"), **{name: 0.0})
