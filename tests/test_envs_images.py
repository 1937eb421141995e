"""Twin tasks with the camera (lavapipe on CPU): one rgb env per domain for the whole module, since each process
pays ~30 s of shader compilation once."""

from __future__ import annotations

import numpy as np
import pytest

from cotrain.data.spec import IMAGE_KEY, STATE_KEY
from cotrain.envs import load_task_config, make_expert, make_task_env, run_expert_episode
from cotrain.envs.runner import EnvRunner

pytestmark = [
    pytest.mark.sapien,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:mani_skill"),  # numpy-2 deprecations, every step
    pytest.mark.filterwarnings("ignore::DeprecationWarning:sapien"),
]


@pytest.fixture(scope="module")
def rgb_envs():
    cfg = load_task_config("pick_place")
    envs = {domain: make_task_env(cfg, domain, obs_mode="rgb") for domain in ("sim", "real_proxy")}
    yield envs
    for env in envs.values():
        env.close()


def image(env, seed: int) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    return obs[IMAGE_KEY][0].cpu().numpy()


def test_image_is_uint8_128_square_and_deterministic(rgb_envs):
    first, again = image(rgb_envs["sim"], 4), image(rgb_envs["sim"], 4)
    assert first.shape == (128, 128, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert first.std() > 10  # a scene, not a blank frame


def test_real_proxy_looks_different(rgb_envs):
    sim, proxy = image(rgb_envs["sim"], 4), image(rgb_envs["real_proxy"], 4)
    assert np.abs(sim.astype(int) - proxy.astype(int)).mean() > 15


def test_chunk_aware_rendering_sees_the_same_frames(rgb_envs):
    """Rendering only at chunk ends must not change what the policy sees there (nor the physics)."""
    cfg = load_task_config("pick_place")
    actions = np.random.default_rng(0).normal(0, 0.03, (2, 4, 7)).astype(np.float32)
    frames = {}
    for every_step in (True, False):
        runner = EnvRunner(cfg, "real_proxy", "train", "rgb", seed=0)
        runner.reset(seed=2)
        results = [runner.step_chunk(chunk, render_every_step=every_step) for chunk in actions]
        frames[every_step] = [(r.obs[IMAGE_KEY], r.obs[STATE_KEY]) for r in results]
        runner.close()
    for (img_a, state_a), (img_b, state_b) in zip(frames[True], frames[False]):
        np.testing.assert_array_equal(state_a, state_b)
        np.testing.assert_array_equal(img_a, img_b)


def test_expert_demo_frames_carry_images(rgb_envs):
    env = rgb_envs["real_proxy"]
    episode = run_expert_episode(env, make_expert("pick_place", env.domain), seed=1)
    assert episode.success
    images = np.stack([f["image"] for f in episode.frames])
    assert images.shape == (len(episode.frames), 128, 128, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0], image(env, 1))  # the first frame is what reset(seed=1) shows
    assert not np.array_equal(images[0], images[-1])


def test_scene_sample_is_the_first_frame_and_the_poses_of_that_scene(rgb_envs):
    from cotrain.pretrain_encoder import scene_sample

    env = rgb_envs["sim"]
    frame, labels = scene_sample(env, 4)
    np.testing.assert_array_equal(frame.numpy(), image(env, 4))
    np.testing.assert_array_equal(labels.numpy(), env.scene_labels()[0].numpy())
    _, other = scene_sample(env, 5)
    assert not np.allclose(other.numpy(), labels.numpy())


def test_pretrain_encoder_end_to_end_writes_weights_the_policy_loads(tmp_path, rgb_envs):
    import torch
    from safetensors.torch import load_file

    from cotrain.config import compose, to_object
    from cotrain.data.spec import FeatureSpec
    from cotrain.policies import load_partial_weights, make_policy, policy_config_from_dict
    from cotrain.pretrain_encoder import run

    cfg = to_object(compose("pretrain_encoder", [f"out={tmp_path}/enc", "scenes=3", "heldout=2", "steps=2",
                                                 "batch_size=2", "workers=0", "device=cpu"]))
    results = run(cfg)
    labels = ["object_x", "object_y", "object_z", "tray_x", "tray_y"]
    assert results["labels"] == labels and list(results["heldout_rms"]) == labels
    assert all(np.isfinite(v) for v in results["heldout_rms"].values())
    assert (tmp_path / "enc" / "results.json").exists()
    spec = FeatureSpec()
    stats = {k: {n: torch.zeros(d) if n in ("mean", "min") else torch.ones(d) for n in ("mean", "std", "min", "max")}
             for k, d in (("observation.state", spec.state_dim), ("action", spec.action_dim))}
    policy = make_policy(policy_config_from_dict(dict(cfg.policy)), spec, stats)
    weights = load_file(str(tmp_path / "enc" / "image_encoder.safetensors"))
    assert weights and all(name.startswith("image_encoder.") for name in weights)
    assert load_partial_weights(policy, tmp_path / "enc" / "image_encoder.safetensors") == len(weights)
    state = policy.state_dict()
    for name, tensor in weights.items():  # every saved tensor is now the policy's, bit for bit
        assert torch.equal(state[name], tensor), name
