"""Config files, the flat type registry and `build`. Torch-free."""
from vla.config.loader import Config, parse_value
from vla.config.registry import ConfigError, build, build_value, lookup, register, registered_names

__all__ = [
    "Config",
    "ConfigError",
    "build",
    "build_value",
    "lookup",
    "parse_value",
    "register",
    "registered_names",
]
