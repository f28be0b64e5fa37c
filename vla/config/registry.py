"""One flat registry of buildable types and the recursive `build`.

Config files name classes by string (`dict(type='PI0FlowMatching', ...)`); `build`
turns such a dict into an object, building nested typed dicts first. Every error
names the config file, the key path and the closest valid names.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable

from vla.errors import VLAError

_REGISTRY: dict[str, Callable[..., Any]] = {}

# Modules whose import registers the library's types (vla.data: datasets, training and eval
# transforms, collators; vla.models: the model families). Imported lazily on the first lookup
# miss, so `import vla.config` stays cheap and torch-free; vla.data imports its modules lazily, so
# they are named one by one. The trainer's runners and metric register when `trainer` is
# imported (a process package the library never imports).
_PROVIDER_MODULES = ("vla.data.collate", "vla.data.distributed", "vla.data.parquet_dataset", "vla.data.tokenizer",
                     "vla.data.transforms", "vla.data.eval_transforms", "vla.models")
_OWN_PACKAGES = {"vla", "trainer", "policy_server", "sim_client"}


class ConfigError(VLAError, ValueError):
    """A config that cannot be loaded or built; the message says where and why."""


def register(obj: Callable[..., Any] | None = None, *, name: str | None = None):
    """Register a class or factory under its own name (or `name`). Usable bare or called."""

    def _add(target: Callable[..., Any]) -> Callable[..., Any]:
        key = name or target.__name__
        existing = _REGISTRY.get(key)
        if existing is not None and existing is not target and _qualname(existing) != _qualname(target):
            raise ConfigError(f"type {key!r} is registered twice: {_qualname(existing)} and {_qualname(target)}")
        _REGISTRY[key] = target
        return target

    return _add(obj) if obj is not None else _add


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


def _import_providers() -> None:
    for module in _PROVIDER_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A provider whose optional dependency is absent (no torch in the sim client)
            # registers nothing; a missing module of our own is a real bug.
            if exc.name is None or exc.name.split(".")[0] in _OWN_PACKAGES:
                raise


def lookup(type_name: str, *, where: str = "") -> Callable[..., Any]:
    """The registered object for `type_name`, or a ConfigError naming the closest names."""
    if type_name not in _REGISTRY:
        _import_providers()
    if type_name in _REGISTRY:
        return _REGISTRY[type_name]
    close = difflib.get_close_matches(type_name, _REGISTRY, n=3, cutoff=0.7)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"{where}unknown type {type_name!r}{hint}")


def _location(source: str | None, path: str) -> str:
    parts = []
    if source:
        parts.append(str(source))
    if path:
        parts.append(path)
    return (": ".join(parts) + ": ") if parts else ""


def _is_typed(value: Any) -> bool:
    return isinstance(value, dict) and "type" in value


def build(cfg: Any, *, source: str | None = None, path: str = "", **extra: Any) -> Any:
    """Instantiate `cfg` (a dict with `type`), building nested typed dicts and lists first.

    `extra` are keyword arguments supplied by the caller (say, a work dir) and win over
    the config. A class may list keys it wants unbuilt in `__config_lazy__`; it gets
    those as plain dicts and builds them itself when it has what they need.
    """
    if not _is_typed(cfg):
        raise ConfigError(f"{_location(source, path)}expected a dict with a 'type' key, got {type(cfg).__name__}")
    cfg = dict(cfg)
    type_ = cfg.pop("type")
    where = _location(source, f"{path}.type" if path else "type")
    target = type_ if callable(type_) and not isinstance(type_, str) else lookup(str(type_), where=where)
    lazy = set(getattr(target, "__config_lazy__", ()))
    kwargs = {}
    for key, value in cfg.items():
        child = f"{path}.{key}" if path else key
        kwargs[key] = value if key in lazy else build_value(value, source=source, path=child)
    kwargs.update(extra)
    _check_signature(target, kwargs, source=source, path=path)
    try:
        return target(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{_location(source, path)}building {_name(target)} failed: {exc}") from exc


def build_value(value: Any, *, source: str | None = None, path: str = "") -> Any:
    """Build every typed dict inside `value`, leaving plain data as it is."""
    if _is_typed(value):
        return build(value, source=source, path=path)
    if isinstance(value, list):
        return [build_value(v, source=source, path=f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(build_value(v, source=source, path=f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        return {k: build_value(v, source=source, path=f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    return value


def _name(target: Any) -> str:
    return getattr(target, "__name__", repr(target))


def _check_signature(target: Callable[..., Any], kwargs: dict[str, Any], *, source: str | None, path: str) -> None:
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    if not accepts_any:
        for key in kwargs:
            if key not in named:
                close = difflib.get_close_matches(key, named, n=3, cutoff=0.7)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                where = _location(source, f"{path}.{key}" if path else key)
                raise ConfigError(f"{where}unknown keyword {key!r} for {_name(target)}{hint}")
    for name in named:
        p = params[name]
        if p.default is inspect.Parameter.empty and name not in kwargs:
            where = _location(source, f"{path}.{name}" if path else name)
            raise ConfigError(f"{where}missing required keyword {name!r} for {_name(target)}")
