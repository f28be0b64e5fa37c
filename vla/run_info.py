"""`run_info.json`: the training facts a work dir's consumers need, recorded by the trainer (torch-free).

    {"statistic_name": "libero_10_no_noops",
     "prompt": {"type": "ProcessPrompts", "max_len": 180, "tokenizer_path": "/path/to/tokenizer"}}

statistic_name   which entry of `dataset_statistics.json` the run normalised with
prompt           the training prompt transform's settings: the server pads eval prompts to the
                 same `max_len` (unless the eval config sets one) and, when the eval tokenizer
                 path does not exist here, uses the training one

The trainer writes it next to `dataset_statistics.json`; the policy server reads it instead of
searching the config for these facts. Work dirs written before the file existed still load:
`RunInfo.from_config` derives the same facts from `config.json` and the statistics file.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from vla.errors import VLAError
from vla.io import read_json, write_json

RUN_INFO_FILENAME = "run_info.json"
PROMPT_TRANSFORMS = ("ProcessPrompts", "ProcessPromptsWithImage")


class RunInfoError(VLAError, ValueError):
    """A run_info.json (or, for an old work dir, a config) the facts cannot be read from."""


@dataclass(frozen=True)
class PromptSettings:
    type: str
    max_len: int | None = None
    tokenizer_path: str | None = None


@dataclass(frozen=True)
class RunInfo:
    statistic_name: str
    prompt: PromptSettings | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, *, source: str = RUN_INFO_FILENAME) -> "RunInfo":
        if not isinstance(d, dict) or not isinstance(d.get("statistic_name"), str):
            raise RunInfoError(f"{source}: expected an object with a string 'statistic_name'")
        prompt = d.get("prompt")
        if prompt is not None:
            if not isinstance(prompt, dict) or not isinstance(prompt.get("type"), str):
                raise RunInfoError(f"{source}: 'prompt' must be an object with a string 'type'")
            prompt = PromptSettings(type=prompt["type"], max_len=prompt.get("max_len"),
                                    tokenizer_path=prompt.get("tokenizer_path"))
        return cls(statistic_name=d["statistic_name"], prompt=prompt)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], statistics_names: list[str], *, source: str) -> "RunInfo":
        """What an old work dir (no run_info.json) says: the config's one `statistic_name` (else the
        statistics file's only entry) and the training pipeline's prompt transform."""
        names = {v for k, v in _walk(cfg) if k == "statistic_name" and isinstance(v, str)}
        if len(names) == 1:
            name = names.pop()
        elif len(statistics_names) == 1:
            name = statistics_names[0]
        else:
            raise RunInfoError(f"{source}: cannot tell which statistics to use (config names {sorted(names)}, "
                               f"the statistics file has {sorted(statistics_names)}); no {RUN_INFO_FILENAME}")
        train = cfg.get("train_dataloader") or {}
        found = next((v for _, v in _walk(train) if isinstance(v, dict) and v.get("type") in PROMPT_TRANSFORMS), None)
        prompt = None
        if found is not None:
            prompt = PromptSettings(type=found["type"], max_len=found.get("max_len"),
                                    tokenizer_path=(found.get("tokenizer") or {}).get("model_path"))
        return cls(statistic_name=name, prompt=prompt)


def write_run_info(work_dir: str | os.PathLike, info: RunInfo) -> Path:
    path = Path(work_dir) / RUN_INFO_FILENAME
    write_json(path, info.to_dict())
    return path


def read_run_info(work_dir: str | os.PathLike) -> RunInfo | None:
    """The work dir's run_info.json, or None if the trainer that wrote the work dir predates it."""
    path = Path(work_dir) / RUN_INFO_FILENAME
    if not path.is_file():
        return None
    return RunInfo.from_dict(read_json(path, error=RunInfoError), source=str(path))


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield "", v
            yield from _walk(v)
