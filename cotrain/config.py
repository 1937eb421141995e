"""Hydra structured configs: every YAML in configs/ is validated against a dataclass registered here.

A key that is not in the dataclass, or a value of the wrong type, is an error at start-up, on the command line
(`data.alhpa=0.3` -> "Key 'alhpa' not in 'DataConfig'") and in YAML files alike.
Task and policy groups are plain mappings at this level: their own strict loaders (`cotrain.envs.config`,
`cotrain.policies.factory.policy_config_from_dict`) validate every key and type, naming the file.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from cotrain.data.config import DataConfig

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")

# (group, schema name, dataclass): a group's YAML files start with `defaults: [<schema name>, _self_]`.
SCHEMAS = [
    ("data", "data_schema", DataConfig),
]


def register_configs() -> None:
    cs = ConfigStore.instance()
    for group, name, node in SCHEMAS:
        cs.store(group=group, name=name, node=node)


def register_schema(name: str, node: type) -> None:
    """Register an entry point's root dataclass; its YAML starts with `defaults: [<name>, ..., _self_]`."""
    register_configs()
    ConfigStore.instance().store(name=name, node=node)


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose a config outside `@hydra.main` (tests, notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides or [])


def to_object(cfg: DictConfig):
    """The typed dataclass behind a composed config (runs each dataclass's __post_init__ checks)."""
    return OmegaConf.to_object(cfg)
