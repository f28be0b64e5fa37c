"""The keys of the config sections that are read as data rather than built (torch-free).

    check_sections(data, source)        every key of a (partial) config is known, else ConfigError naming the
                                        file, the key path and the closest valid names
    allowed_keys(path, node) -> set | None   the keys a dict at `path` may hold (None: no schema for it)

Typed dicts (`type=...`) are checked against their constructor when built (vla.config.registry); this module
covers the sections read as data: `train_dataloader`, `eval` (FluxVLA's LiberoEvalRunner, read by the sim
client and the server), `eval.dataset` and `custom_imports`. Top-level names are free: a config file may
define its own helper values (IMAGE_MEANS, WIDTH).
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping

from vla.config.registry import ConfigError

TRAIN_DATALOADER = frozenset({"batch_size", "per_device_batch_size", "per_device_num_workers", "dataset"})
# The seed's eval section, the server's `noise`, then the sim client's own knobs (sim_client.runner.EvalConfig; a test keeps
# both in step).
EVAL = frozenset({"type", "task_suite_name", "model_family", "eval_chunk_size", "resize_size",
                  "num_trials_per_task", "num_steps_wait", "seed", "dataset", "denormalize_action",
                  "noise", "max_steps", "tasks", "workers", "shard", "video", "render", "renderer", "episode_timeout_s",
                  "retries", "request_timeout_s", "server_retries", "ready_timeout_s", "threads_per_worker",
                  "progress", "dimensions", "keep_errors"})
EVAL_DATASET = frozenset({"type", "transforms"})
CUSTOM_IMPORTS = frozenset({"imports", "allow_failed_imports"})
# The one type each data-read section may name (not registered: nothing builds them).
SECTION_TYPES = {("eval",): "LiberoEvalRunner", ("eval", "dataset"): "LiberoParquetEvalDataset"}

_SCHEMAS = {("train_dataloader",): TRAIN_DATALOADER, ("eval",): EVAL, ("eval", "dataset"): EVAL_DATASET,
            ("custom_imports",): CUSTOM_IMPORTS}


def allowed_keys(path: tuple[str, ...], node: Mapping[str, Any]) -> frozenset[str] | None:
    return _SCHEMAS.get(tuple(path))


def _unknown(source: str | None, dotted: str, key: str, valid) -> ConfigError:
    close = difflib.get_close_matches(key, sorted(valid), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"{source}: {dotted}: unknown key {key!r}{hint} (valid: {', '.join(sorted(valid))})")


def check_sections(data: Mapping[str, Any], source: str | None) -> None:
    for path in _SCHEMAS:
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, Mapping):
            continue
        valid = allowed_keys(path, node)
        for key in node:
            if key not in valid:
                raise _unknown(source, ".".join(path + (str(key),)), str(key), valid)
        want = SECTION_TYPES.get(path)
        if want is not None and "type" in node and node["type"] != want:
            raise ConfigError(f"{source}: {'.'.join(path)}.type={node['type']!r}: this section is read as data "
                              f"by the sim client and the server, which implement {want!r} only")
