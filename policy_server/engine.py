"""The model engine: a trained work dir served as a `Policy`.

    engine = load_engine("work_dirs/demo")            # the checkpoint `latest` names
    engine.infer_batch([engine.prepare(obs), ...]) -> [actions [chunk, 7], ...]

Loading reads `config.json` (data only: no config .py is executed), `dataset_statistics.json`,
`run_info.json` (the statistic name and prompt settings the trainer recorded; derived from the
config for work dirs written before it existed) and one weights-only checkpoint (`.pt` via torch.load(weights_only=True), or `.safetensors`).
The model is built from the config, the checkpoint loaded strictly (a missing or mismatched
key is an error naming it), LoRA adapters merged into their base weights, and the config's
`eval` transforms built and bound to the statistics and the model's sizes.

Flow matching samples from noise. By default (`noise='fresh'`, as openpi samples) each request gets its own
noise: drawn from a generator seeded by the request's `seed` when it sends one (the sim client derives it
from suite/task/trial/step, so a rerun is identical), else from the server's generator seeded by `seed`.
Either way an observation's actions do not depend on the batch it lands in. `noise='fixed'` gives every
request the same seeded noise (the earlier behaviour). `noise='zero'` starts every sample at the noise
distribution's mean (all zeros): a deterministic, mode-seeking sample. For a small policy trained from
scratch on one scripted expert (a unimodal target) it halves the open-loop action error and places the
gripper where the data does; a policy trained on multimodal human data should sample fresh noise.
The mode comes from `load_engine(noise=...)` (the server's `--noise`), else from the config's
`eval.noise`, else 'fresh'.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy_server.policy import BasePolicy
from vla import checkpoint as ckpt
from vla.config import ConfigError, build
from vla.data.binding import bind_model, bind_statistics
from vla.data.errors import TransformError
from vla.errors import VLAError
from vla.io import read_json
from vla.models.base import VLAModel
from vla.normalize import STATISTICS_FILENAME, DatasetStatistics, load_statistics
from vla.run_info import PromptSettings, RunInfo, RunInfoError, read_run_info
from vla.wire import protocol
from vla.wire.errors import ErrorCode, PolicyError
from vla.wire.server_info import ServerInfo

log = logging.getLogger("policy_server.engine")

# Batch keys of the model contract and the dtype each is stacked to.
NOISE_MODES = ("fresh", "fixed", "zero")
SEEDS_KEY = "_request_seeds"   # collate -> predict: each request's seed (or None); not a model input
_BATCH_KEYS = {"images": torch.float32, "img_masks": torch.bool, "lang_tokens": torch.long,
               "lang_masks": torch.bool, "states": torch.float32, "embodiment_ids": torch.long}
_CKPT_RE = re.compile(r"^checkpoint_(epoch|step)_(\d+)\.(pt|safetensors)$")


class EngineError(VLAError, ValueError):
    """A work dir that cannot be served; the message names the file and what is wrong."""


def find_checkpoint(work_dir: Path, checkpoint: str | None = None) -> Path:
    """`checkpoint` (a path, or a name inside the work dir), else `latest`, else the newest file."""
    if checkpoint:
        for path in (Path(checkpoint), work_dir / checkpoint):
            if path.is_file():
                return path
        raise EngineError(f"checkpoint {checkpoint!r} not found (looked in the current directory and {work_dir})")
    name = ckpt.read_latest(work_dir)
    if name is not None:
        if not (work_dir / name).is_file():
            raise EngineError(f"{work_dir / 'latest'} names {name}, which does not exist")
        return work_dir / name
    found = sorted((int(m.group(2)), p) for p in work_dir.iterdir() if (m := _CKPT_RE.match(p.name)))
    if not found:
        raise EngineError(f"{work_dir}: no `latest` and no checkpoint_{{epoch,step}}_N.pt/.safetensors file")
    return found[-1][1]


def check_model_inputs(sample: dict[str, Any]) -> dict[str, Any]:
    """Refuse a sample whose model inputs are not finite after the transforms: finite but extreme
    values (a state of 1e300) overflow in normalisation, and the model would answer with NaN."""
    for key in _BATCH_KEYS:
        value = sample.get(key)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise PolicyError(ErrorCode.INVALID_ARGUMENT,
                              f"{key!r} is not finite after the input transforms: the observation's values are "
                              f"out of range (the state is normalised with the training statistics)")
    return sample


def check_noise_mode(noise: Any, name: str) -> str:
    """`noise` if it is one of NOISE_MODES, else EngineError naming `name` (the argument, or the
    config key and file it came from)."""
    if noise not in NOISE_MODES:
        raise EngineError(f"{name}={noise!r}: expected one of {', '.join(NOISE_MODES)}")
    return noise


def finite_actions(actions: np.ndarray) -> np.ndarray | PolicyError:
    """The chunk, or INVALID_ARGUMENT for this request alone if the model overflowed on it (inputs
    finite but far outside what it was trained on, e.g. a state of 1e30)."""
    if np.isfinite(actions).all():
        return actions
    return PolicyError(ErrorCode.INVALID_ARGUMENT,
                       "the model's actions for this observation are not finite: its values (the state) are far "
                       "outside the range of the training statistics")


class ModelEngine(BasePolicy):
    """A trained model behind the server's `Policy` contract (policy_server/policy.py).

    prepare(obs)          schema check, then the eval transforms (bound to the work dir's statistics
                          and the model's sizes); a transform's error is INVALID_ARGUMENT.
    infer_batch(samples)  collate, one seeded sampling call, denormalise each chunk.
    """

    def __init__(self, model: torch.nn.Module, transforms: list[Any], denormalize: Any,
                 statistics: DatasetStatistics, info: ServerInfo, device: str = "cpu", seed: int = 0,
                 noise: str = "fresh"):
        self.model = model
        self.transforms = transforms
        self.denormalize = denormalize
        self.statistics = statistics
        self._info = info
        self.device = torch.device(device)
        self.seed = int(seed)
        self.chunk_length = int(model.chunk_length)
        self.model_action_dim = int(model.action_dim)
        # The flow runs at the model-internal width (openpi / GR00T pad actions to 32); the output is the data's.
        self.noise_dim = int(model.noise_dim)
        self.noise_mode = check_noise_mode(noise, "noise")
        gen = torch.Generator().manual_seed(self.seed)
        self._noise = torch.randn(self.chunk_length, self.noise_dim, generator=gen)
        self._rng = gen   # fresh noise for requests without a seed continues this stream

    def info(self) -> ServerInfo:
        return self._info

    def prepare(self, obs: Any) -> dict[str, Any]:
        """Schema check, then the eval transforms, on the transport's thread (not the model's)."""
        data = super().prepare(obs)
        try:
            for t in self.transforms:
                data = t(data)
        except TransformError as exc:
            raise PolicyError(ErrorCode.INVALID_ARGUMENT, str(exc)) from None
        return check_model_inputs(data)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {}
        for key, dtype in _BATCH_KEYS.items():
            if key in samples[0]:
                batch[key] = torch.from_numpy(np.stack([np.asarray(s[key]) for s in samples])).to(self.device, dtype)
        batch[SEEDS_KEY] = [s.get(protocol.SEED_KEY) for s in samples]
        return batch

    def _request_noise(self, seeds: list[int | None]) -> torch.Tensor:
        """[B, chunk, noise_dim]: one draw per request, from its own seed when it sent one."""
        if self.noise_mode == "fixed":
            return self._noise[None].expand(len(seeds), -1, -1).contiguous()
        if self.noise_mode == "zero":
            return torch.zeros(len(seeds), self.chunk_length, self.noise_dim)
        rows = [torch.randn(self.chunk_length, self.noise_dim,
                            generator=self._rng if s is None else torch.Generator().manual_seed(int(s)))
                for s in seeds]
        return torch.stack(rows)

    @torch.inference_mode()
    def predict(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Normalised model actions [B, chunk, A'] (float32 numpy)."""
        batch = dict(batch)
        seeds = batch.pop(SEEDS_KEY, None)
        b = next(iter(batch.values())).shape[0]
        noise = self._request_noise(seeds if seeds is not None else [None] * b).to(self.device)
        out = self.model.predict_action(batch, noise=noise)
        return out.float().cpu().numpy()

    def infer_batch(self, samples: list[dict[str, Any]]) -> list[np.ndarray | PolicyError]:
        # The denormaliser's contract: [B, chunk, A'] in, [B, chunk, A] out, one call for the whole batch
        # (on the model's thread, which every request waits for), each row what that chunk alone gives.
        out = self.denormalize(self.predict(self.collate(samples)))
        if np.ndim(out) != 3 or len(out) != len(samples):   # a config's denormaliser (warm-up calls this)
            raise EngineError(f"{type(self.denormalize).__name__} gave shape {np.shape(out)} for a batch of "
                              f"{len(samples)}: a denormaliser takes [B, chunk, A'] and returns [B, chunk, action_dim]")
        return [finite_actions(a) for a in out]


def _build_eval(cfg: dict, source: str, tokenizer_path: str | None,
                prompt: PromptSettings | None) -> tuple[list[Any], Any]:
    """The config's eval transforms, with the training prompt settings the trainer recorded."""
    eval_cfg = cfg.get("eval") or {}
    t_cfgs = ((eval_cfg.get("dataset") or {}).get("transforms")) or []
    if not t_cfgs:
        raise EngineError(f"{source}: no eval.dataset.transforms; the server needs the config's eval transforms")
    train_path = prompt.tokenizer_path if prompt else None
    built = []
    for i, t_cfg in enumerate(t_cfgs):
        t_cfg = json.loads(json.dumps(t_cfg))   # a private copy
        if "tokenizer" in t_cfg:
            path = (t_cfg["tokenizer"] or {}).get("model_path")
            if tokenizer_path:
                t_cfg["tokenizer"]["model_path"] = tokenizer_path
            elif path and not Path(path).is_dir() and train_path and Path(train_path).is_dir():
                log.warning("eval tokenizer %s not found; using the training pipeline's %s", path, train_path)
                t_cfg["tokenizer"]["model_path"] = train_path
            # Prompts must be padded as in training: take the training max_len unless eval sets one.
            if "max_len" not in t_cfg and prompt is not None and prompt.max_len is not None:
                t_cfg["max_len"] = prompt.max_len
        try:
            built.append(build(t_cfg, source=source, path=f"eval.dataset.transforms[{i}]"))
        except ConfigError as exc:
            raise EngineError(str(exc)) from None
    d_cfg = eval_cfg.get("denormalize_action") or {"type": "DenormalizeLiberoAction"}
    try:
        denorm = build(d_cfg, source=source, path="eval.denormalize_action")
    except ConfigError as exc:
        raise EngineError(str(exc)) from None
    return built, denorm


def load_engine(work_dir: str | Path, checkpoint: str | None = None, device: str = "cpu",
                tokenizer_path: str | None = None, seed: int = 0, noise: str | None = None) -> ModelEngine:
    from vla.models.loading import load_weights
    from vla.models.lora import has_lora, merge_lora

    work_dir = Path(work_dir)
    cfg_path = work_dir / "config.json"
    stats_path = work_dir / STATISTICS_FILENAME
    for path in (cfg_path, stats_path):
        if not path.is_file():
            raise EngineError(f"{path}: missing; is {work_dir} a work dir the trainer wrote?")
    cfg = read_json(cfg_path, error=EngineError)
    if "model" not in cfg:
        raise EngineError(f"{cfg_path}: no 'model' section")
    if noise is None:
        noise = check_noise_mode((cfg.get("eval") or {}).get("noise", "fresh"), f"{cfg_path}: eval.noise")
    try:
        run = read_run_info(work_dir) or RunInfo.from_config(
            cfg, sorted(read_json(stats_path, error=EngineError)), source=str(cfg_path))
    except RunInfoError as exc:
        raise EngineError(str(exc)) from None
    statistic_name = run.statistic_name
    statistics = load_statistics(stats_path, statistic_name)
    weights = find_checkpoint(work_dir, checkpoint)

    import vla.models  # noqa: F401  (fills the registry with the model types)

    model_cfg = dict(cfg["model"])
    if "pretrained_name_or_path" in model_cfg:
        model_cfg["pretrained_name_or_path"] = None   # the checkpoint holds every weight
    try:
        model = build(model_cfg, source=str(cfg_path), path="model")
    except ConfigError as exc:
        raise EngineError(str(exc)) from None
    if not isinstance(model, VLAModel):
        raise EngineError(f"{cfg_path}: model {type(model).__name__} is not a vla.models.base.VLAModel "
                          "(the model contract)")
    report = load_weights(model, str(weights), strict=True)
    if has_lora(model):
        merge_lora(model)
    model.eval().to(device)
    transforms, denorm = _build_eval(cfg, str(cfg_path), tokenizer_path, run.prompt)
    bind_statistics([*transforms, denorm], statistics, state_dim=model.state_dim)
    bind_model(transforms, model)
    digest = hashlib.sha256()
    digest.update(stats_path.read_bytes())
    st = weights.stat()
    digest.update(f"{weights.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    model_type = str(model_cfg.get("type"))
    info = ServerInfo(
        model=model_type,
        checkpoint=weights.name,
        chunk_length=int(model.chunk_length),
        action_dim=int(getattr(denorm, "action_dim", model.action_dim)),
        inputs=BasePolicy.input_specs,
        image_orientation=protocol.ORIENTATION_AS_RENDERED,
        model_version=f"{weights.stem}-{digest.hexdigest()[:12]}",
        statistic_name=statistic_name,
        work_dir=str(work_dir),
        state_dim=model.state_dim,
        model_action_dim=int(model.action_dim),
        gripper_convention=getattr(denorm, "convention", None),
        weights_loaded=report.loaded,
    )
    log.info("loaded %s from %s (%s), noise %s", model_type, weights, report.summary(), noise)
    return ModelEngine(model, transforms, denorm, statistics, info, device=device, seed=seed, noise=noise)
