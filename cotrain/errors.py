"""Errors shared across packages (kept import-free, so any module may raise them)."""


class ConfigError(ValueError):
    """A task config with an unknown or badly typed key, or an unknown task, domain or variation name."""
