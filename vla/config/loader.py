"""Load config files (`.py` as in FluxVLA, or a dumped `.json`/`.yaml`), merge `_base_`,
apply `--cfg-options` overrides, and dump the resolved config.

A `.py` config is executed: only ever load files you wrote. The policy server reads the
dumped `config.json` (plain data) and never executes Python it was handed.
"""
from __future__ import annotations

import ast
import copy
import os
import runpy
import types
from pathlib import Path
from typing import Any, Iterable

from vla.config.registry import ConfigError
from vla.config.schema import allowed_keys, check_sections
from vla.io import atomic_write_text, read_json, write_json

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"


class Config(dict):
    """A resolved config: a plain nested dict plus the file it came from.

    Sections are reached as `cfg["model"]` or `cfg.model`; nested values stay plain
    dicts and lists so they can be dumped, compared and handed to `build`.
    """

    def __init__(self, data: dict[str, Any] | None = None, filename: str | None = None):
        super().__init__(data or {})
        self.filename = filename

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"config {self.filename or ''} has no section {key!r}; it has {sorted(self)}") from None

    @classmethod
    def fromfile(cls, path: str | os.PathLike, cfg_options: Iterable[str] | dict | None = None) -> "Config":
        path = Path(path)
        data = _lists_for_tuples(_load_with_bases(path.resolve(), chain=()))
        cfg = cls(data, filename=str(path))
        if cfg_options:
            cfg.merge_options(cfg_options)
        return cfg

    def merge_options(self, options: Iterable[str] | dict) -> None:
        """Apply overrides given as `a.b.c=value` strings (or a dict of dotted keys)."""
        items = options.items() if isinstance(options, dict) else (_split_option(o) for o in options)
        for dotted, value in items:
            _set_dotted(self, dotted, _lists_for_tuples(value), source=self.filename)
        check_sections(self, "--cfg-options")

    def to_plain(self) -> dict[str, Any]:
        return _plain(dict(self), path="")

    def dump(self, work_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write `config.json` and `config.yaml` into `work_dir`, each atomically."""
        import yaml

        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        plain = self.to_plain()
        json_path = work_dir / "config.json"
        yaml_path = work_dir / "config.yaml"
        write_json(json_path, plain)
        atomic_write_text(yaml_path, yaml.safe_dump(plain, sort_keys=False, allow_unicode=True))
        return json_path, yaml_path


def _load_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    suffix = path.suffix.lower()
    if suffix == ".py":
        try:
            namespace = runpy.run_path(str(path))
        except SyntaxError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: syntax error in config: {exc.msg}") from exc
        return {k: v for k, v in namespace.items()
                if not k.startswith("__") and not isinstance(v, (types.ModuleType, types.FunctionType, type))}
    if suffix == ".json":
        return read_json(path, error=ConfigError)
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    raise ConfigError(f"{path}: unsupported config format {suffix!r} (use .py, .json or .yaml)")


def _load_with_bases(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    if path in chain:
        raise ConfigError(f"{path}: _base_ cycle: {' -> '.join(str(p) for p in chain + (path,))}")
    data = _load_file(path)
    bases = data.pop(BASE_KEY, None)
    check_sections(data, str(path))  # each file's own keys, so an error names the file that wrote them
    if bases is None:
        return _strip_delete(data)
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, (list, tuple)):
        raise ConfigError(f"{path}: {BASE_KEY} must be a path or a list of paths, got {type(bases).__name__}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = (path.parent / base).resolve()
        if not base_path.is_file():
            raise ConfigError(f"{path}: {BASE_KEY} file {base!r} not found (looked for {base_path})")
        merged = _merge(merged, _load_with_bases(base_path, chain + (path,)))
    return _strip_delete(_merge(merged, data))


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Child overrides base; dicts merge key by key unless the child says `_delete_=True`."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get(DELETE_KEY, False):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _strip_delete(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_delete(v) for k, v in value.items() if k != DELETE_KEY}
    if isinstance(value, list):
        return [_strip_delete(v) for v in value]
    return value


def _split_option(option: str) -> tuple[str, Any]:
    if "=" not in option:
        raise ConfigError(f"--cfg-options entry {option!r} is not of the form key.path=value")
    key, raw = option.split("=", 1)
    return key.strip(), parse_value(raw)


def parse_value(raw: str) -> Any:
    """A command-line value as Python data: literals where they parse, else the string."""
    text = raw.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _set_dotted(root: dict[str, Any], dotted: str, value: Any, *, source: str | None) -> None:
    parts = dotted.split(".")
    node: Any = root
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]), source)
    last = parts[-1]
    if isinstance(node, list):
        index = _index(last, dotted, node, source)
        node[index] = value
    elif isinstance(node, dict):
        if last not in node:
            _check_new_key(node, tuple(parts[:-1]), last, dotted, source)
        node[last] = value
    else:
        raise ConfigError(f"{source}: {dotted}: cannot set a key inside a {type(node).__name__}")


def _check_new_key(node: dict, path: tuple[str, ...], key: str, dotted: str, source: str | None) -> None:
    """An override may add a key the config did not write only where it is valid: a keyword the dict's
    `type` accepts, or a key of a data section's schema."""
    valid = allowed_keys(path, node)
    unchecked = ""
    if valid is None and "type" in node:
        valid = _accepted_keywords(node["type"], dotted, source)
        if valid is None:
            unchecked = f"; {node['type']!r} is not registered in this process, so write the key in the config file"
    if valid is None:
        valid = set()
    if key in valid:
        return
    import difflib

    names = sorted(set(valid) | {str(k) for k in node})
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"{source}: --cfg-options {dotted}: no key {key!r} to override and none may be added "
                      f"there{hint} (valid: {', '.join(names)}){unchecked}")


def _accepted_keywords(type_name: Any, dotted: str, source: str | None) -> set[str] | None:
    import inspect

    from vla.config.registry import lookup

    try:
        target = lookup(str(type_name), where=f"{source}: {dotted}: ")
        if hasattr(target, "accepted_keys"):   # a type that takes **params and validates them itself
            return set(target.accepted_keys())
        params = inspect.signature(target).parameters.values()
    except (ConfigError, TypeError, ValueError):
        return None  # an unregistered type (e.g. the server's eval transforms in the trainer): no new keys
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)} - {"self"}


def _child(node: Any, part: str, path: str, source: str | None) -> Any:
    if isinstance(node, list):
        return node[_index(part, path, node, source)]
    if isinstance(node, dict):
        if part not in node:
            import difflib

            close = difflib.get_close_matches(part, [str(k) for k in node], n=3, cutoff=0.7)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"{source}: {path}: no key {part!r} to override{hint}")
        return node[part]
    raise ConfigError(f"{source}: {path}: cannot descend into a {type(node).__name__}")


def _index(part: str, path: str, node: list, source: str | None) -> int:
    try:
        index = int(part)
    except ValueError:
        raise ConfigError(f"{source}: {path}: {part!r} is not a list index") from None
    if not -len(node) <= index < len(node):
        raise ConfigError(f"{source}: {path}: index {index} out of range for a list of {len(node)}")
    return index


def _lists_for_tuples(value: Any) -> Any:
    """Tuples become lists at load time, so a `.py` config equals its dumped `config.json`."""
    if isinstance(value, dict):
        return {k: _lists_for_tuples(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists_for_tuples(v) for v in value]
    return value


def _plain(value: Any, path: str) -> Any:
    """JSON-able data: tuples become lists, a class given as `type` becomes its registered name."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "type" and isinstance(v, type):
                out[k] = v.__name__
            else:
                out[str(k)] = _plain(v, f"{path}.{k}" if path else str(k))
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "tolist"):
        return value.tolist()
    raise ConfigError(f"{path}: value of type {type(value).__name__} cannot be written to config.json")
