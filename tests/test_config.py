"""Configs are strict: a mistyped key or a wrongly typed value is an error, not a silent default."""

import pytest
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError
from hydra.errors import ConfigCompositionException

from cotrain.config import compose, to_object
from cotrain.data.config import DataConfig


def test_data_group_composes_into_its_dataclass():
    cfg = compose("data/default", ["data.alpha=0.25", "data.real=[a,b]"])
    obj = to_object(cfg.data)
    assert isinstance(obj, DataConfig) and obj.alpha == 0.25 and obj.real == ["a", "b"]


def test_mistyped_key_is_an_error():
    with pytest.raises(ConfigCompositionException, match="alhpa"):
        compose("data/default", ["data.alhpa=0.3"])


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigCompositionException, match="batch_size"):
        compose("data/default", ["data.batch_size=big"])


def test_out_of_range_alpha_is_an_error():
    cfg = compose("data/default", ["data.alpha=1.5"])
    with pytest.raises(ValueError, match=r"data.alpha=1.5 must be in \[0, 1\]"):
        to_object(cfg.data)


def test_unknown_key_in_yaml_is_an_error():
    from omegaconf import OmegaConf

    with pytest.raises((ConfigAttributeError, ConfigKeyError, ValidationError), match="batchsize"):
        OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.create({"batchsize": 3}))


def test_stage2_enum_like_values_and_the_task_are_checked_when_the_config_is_parsed():
    import cotrain.experiment  # noqa: F401 - registers the stage2 and experiment schemas
    cfg = to_object(compose("stage2", ["init=x", "task=pick_place", "backend=physx_cpu_serial"]))
    assert cfg.backend == "physx_cpu_serial" and cfg.task_config.task == "pick_place"
    assert cfg.task_config.max_episode_steps == cfg.task["max_episode_steps"]  # parsed once, the mapping's values
    for override, message in (("backend=gpu", "stage2.backend must be one of physx_cpu|physx_cpu_serial|physx_cuda, "
                                               "got 'gpu'"),
                              ("rl.data_parallel=zero3", r"rl.data_parallel must be one of ddp\|fsdp2, got 'zero3'"),
                              ("+task.bogus=1", r"configs/task/pick_place.yaml: unknown key\(s\) \['bogus'\]")):
        with pytest.raises(ValueError, match=message.replace("|", r"\|") if "backend" in override else message):
            to_object(compose("stage2", ["init=x", "task=pick_place", override]))
    with pytest.raises(ValueError, match="experiment: eval.backend must be one of"):
        to_object(compose("experiment", ["eval.backend=cuda"]))
