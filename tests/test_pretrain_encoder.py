"""Image-encoder pretraining (`cotrain.pretrain_encoder`) on synthetic scenes: it learns where things are, trains
and saves only the keypoint stages, and what it saves is what Stage I's `init_weights` loads. (The rendered-scene
path runs in test_envs_images.py, which shares its rgb envs.)"""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file
from test_policies_support import HEADS, TINY_SPEC, stats_of, synthetic_batch, tiny_config

from cotrain.policies import load_partial_weights, make_policy
from cotrain.policies.blocks import ImageEncoder
from cotrain.pretrain_encoder import EncoderPretrainConfig, fit_encoder, keypoint_prefixes, rms_error, save_encoder


def squares(n: int, seed: int, size: int = 32, side: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Black uint8 images with one white side×side square at a random place; labels: its centre (x, y) in pixels."""
    g = torch.Generator().manual_seed(seed)
    corner = torch.randint(0, size - side + 1, (n, 2), generator=g)
    images = torch.zeros(n, size, size, 3, dtype=torch.uint8)
    for i, (x, y) in enumerate(corner.tolist()):
        images[i, y:y + side, x:x + side] = 255
    return images, corner.float() + side / 2


def test_fit_encoder_learns_where_the_square_is_on_unseen_images(one_thread):
    torch.manual_seed(0)
    encoder = ImageEncoder(2, (8, 16), 32, keypoints=8)
    x_train, y_train = squares(512, seed=0)
    x_test, y_test = squares(128, seed=1)
    predict = fit_encoder(encoder, x_train, y_train, steps=300, batch_size=32, lr=3e-3, log_every=10**9)
    err = rms_error(predict, x_test, y_test)
    spread = y_test.std(0)  # the error of always answering the mean position: ~7.5 px on a 32 px image
    assert (err < 0.25 * spread).all(), (err, spread)


def test_only_the_keypoint_stages_train_and_the_saved_file_is_what_stage1_loads(tmp_path, one_thread):
    torch.manual_seed(0)
    batch = synthetic_batch(n=4)
    cfg = dataclasses.replace(tiny_config(HEADS["flow_sde"]), cnn_channels=(16, 32, 32), keypoints=4)
    policy = make_policy(cfg, TINY_SPEC, stats_of(batch))
    encoder = policy.image_encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    x, y = squares(16, seed=0)
    fit_encoder(encoder, x, y, steps=3, batch_size=4, lr=1e-2, log_every=10**9)

    prefixes = keypoint_prefixes(encoder)
    assert prefixes == ("convs.0.", "convs.1.", "keypoints.")
    changed = {k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(prefixes) for k in changed)  # convs.2 and proj keep their initialisation
    assert any(k.startswith("convs.2.") for k in before) and not any(k.startswith("convs.2.") for k in changed)

    path = tmp_path / "enc" / "image_encoder.safetensors"
    n = save_encoder(encoder, path)
    saved = load_file(str(path))
    assert len(saved) == n and all(k.startswith(("image_encoder.convs.0.", "image_encoder.convs.1.",
                                                  "image_encoder.keypoints.")) for k in saved)
    assert not list(path.parent.glob("*.tmp"))

    fresh = make_policy(cfg, TINY_SPEC, stats_of(batch))
    assert not torch.equal(fresh.image_encoder.keypoint_coordinates(x), encoder.keypoint_coordinates(x))
    assert load_partial_weights(fresh, path) == n
    assert torch.equal(fresh.image_encoder.keypoint_coordinates(x), encoder.keypoint_coordinates(x))


def test_an_encoder_without_keypoints_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="keypoints > 0"):
        keypoint_prefixes(ImageEncoder(4, (8, 16), 32, keypoints=0))


@pytest.mark.parametrize("field, value", [("scenes", 0), ("steps", 0), ("batch_size", 0), ("workers", -1),
                                          ("domain", "real_proxy")])
def test_bad_config_values_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        EncoderPretrainConfig(**{field: value})


def test_the_entry_point_config_composes_strictly():
    from hydra.errors import ConfigCompositionException

    from cotrain.config import compose, to_object

    cfg = to_object(compose("pretrain_encoder", ["scenes=7", "task=push_cube"]))
    assert isinstance(cfg, EncoderPretrainConfig) and cfg.scenes == 7
    assert cfg.task["task"] == "push_cube" and cfg.policy["keypoints"] > 0
    with pytest.raises(ConfigCompositionException, match="scenez"):
        compose("pretrain_encoder", ["scenez=7"])
