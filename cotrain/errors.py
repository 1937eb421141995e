"""Errors shared across packages (kept import-free, so any module may raise them)."""


class ConfigError(ValueError):
    """A config with an unknown, missing or badly typed key or value (`cotrain.config_io`), or an unknown task,
    domain or variation name."""


def check_choice(value: str, allowed: object, key: str) -> str:
    """`value` when it is one of the values of the Literal type `allowed`, else one ValueError naming `key`.

    Enum-like config fields are declared with a Literal alias (`Backend = Literal["a", "b"]`); Hydra's structured
    configs (OmegaConf 2.3) cannot hold a Literal-typed field, so those are typed `str` and checked with this in
    `__post_init__`, which runs when the config is parsed."""
    from typing import get_args

    choices = get_args(allowed)
    if value not in choices:
        raise ValueError(f"{key} must be one of {'|'.join(choices)}, got {value!r}")
    return value
