"""π0 (Black et al., 2024, arXiv:2410.24164): PaliGemma + a Gemma action expert trained by flow matching.

    PI0FlowMatching(vlm_backbone, llm_expert, proj_width, n_action_steps, state_proj, action_in_proj,
                    action_out_proj, action_time_mlp_in, action_time_mlp_out, freeze_vlm_backbone=False,
                    freeze_llm_expert=False, use_lora=False, lora_rank=32, lora_dropout=0.0,
                    lora_target_modules=None, pretrained_name_or_path=None, name_mapping=None, ...)
      forward(batch) -> {"loss", "mse"}      flow-matching loss on the action chunk (batch `noise`/`time` optional)
      sample_actions(batch, num_steps=None, noise=None) -> [B, n_action_steps, action_dim]
      predict_action(batch, *, noise=None) -> sample_actions with `num_inference_steps`
    (the model contract: vla/models/base.py)
      load_pretrained() -> LoadReport | None

The two stacks share attention layer by layer: at layer l each stream applies its own norms and q/k/v
projections, the queries attend over the joint key sequence, and each stream applies its own o_proj and MLP.
Token blocks: [images + prompt] (bidirectional) | [state] | [noisy actions]; a block sees itself and earlier
blocks (π0's block-causal mask). Because the prefix never attends to the suffix, its per-layer keys/values
are computed once in `sample_actions`; the state token's too (it does not see the actions). Each denoising
step then runs only the action tokens through the expert.

Conventions match openpi and transformers' PI0: time t=1 is noise, x_t = t·ε + (1-t)·a, target u = ε - a,
Euler steps from t=1 to 0; t ~ Beta(1.5, 1)·0.999 + 0.001 in training; sinusoidal time embedding with
periods 4e-3..4.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from vla.config import build, register
from vla.models.loading import CheckpointMismatchError, LoadReport, load_weights, read_state_dict
from vla.models.openpi_checkpoint import padded_width_hint, to_mapping_layout
from vla.models.gemma_ops import final_norm, layer_ops, residual
from vla.models.lora import apply_lora, freeze
from vla.models.paligemma import GemmaLLMBackbone, PaliGemma  # noqa: F401  (registers both)
from vla.models.projector import LinearProjector  # noqa: F401  (registers it)
from vla.models.siglip_ops import SiglipInference
from vla.models.base import VLAModel, need

PROJECTOR_NAMES = ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out")


def _embedding_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def sinusoidal_time_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """openpi's `create_sinusoidal_pos_embedding`: periods and angles in float64 (float32 on MPS), returned
    as float32 (openpi casts to the time's dtype, float32)."""
    dtype = _embedding_dtype(t.device)
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    scaling = 1.0 / period * 2 * math.pi
    angle = scaling[None, :] * t.float()[:, None]
    return torch.cat([angle.sin(), angle.cos()], dim=-1).float()


def euler_time_grid(steps: int, device=None) -> torch.Tensor:
    """The times openpi's sampler visits: t = 1, then t += -1/steps accumulated in float32."""
    dt = torch.tensor(-1.0 / steps, dtype=torch.float32)
    t, times = torch.tensor(1.0, dtype=torch.float32), []
    for _ in range(steps):
        times.append(t.clone())
        t = t + dt
    return torch.stack(times).to(device)


def _attend(q, k, v, mask, scale):
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=k.shape[1] != q.shape[1])
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def _mlp_block(ops, h: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    x, gate = ops.norm2(h, cond)
    return residual(h, ops.mlp(x), gate)


# `name_mapping` for weights in the layout of transformers' `PI0ForConditionalGeneration`
# (our key prefix -> theirs), e.g. `load_weights(model, hf_pi0.state_dict(), TRANSFORMERS_PI0_NAME_MAPPING)`.
TRANSFORMERS_PI0_NAME_MAPPING = {
    "vlm_backbone.vlm.model.vision_tower.vision_model": "model.vlm.vision_tower",
    "vlm_backbone.vlm.model.multi_modal_projector": "model.vlm.multi_modal_projector",
    "vlm_backbone.vlm.model.language_model": "model.vlm.language_model",
    "llm_expert.llm.model": "model.dit",
    "state_proj.projector": "embed_action_time.state_proj",
    "action_in_proj.projector": "embed_action_time.action_in_proj",
    "action_time_mlp_in.projector": "embed_action_time.action_time_mlp_in",
    "action_time_mlp_out.projector": "embed_action_time.action_time_mlp_out",
    "action_out_proj.projector": "action_out_proj",
}


def _as_module(value: Any, name: str) -> nn.Module:
    return build(value, path=name) if isinstance(value, dict) else value


@register
class PI0FlowMatching(VLAModel):
    def __init__(self, vlm_backbone: Any, llm_expert: Any, proj_width: int = 1024, n_action_steps: int = 50,
                 state_proj: Any = None, action_in_proj: Any = None, action_out_proj: Any = None,
                 action_time_mlp_in: Any = None, action_time_mlp_out: Any = None,
                 freeze_vlm_backbone: bool = False, freeze_llm_expert: bool = False,
                 use_lora: bool = False, lora_rank: int = 32, lora_alpha: float | None = None,
                 lora_dropout: float = 0.0, lora_target_modules: list[str] | None = None,
                 pretrained_name_or_path: str | None = None, name_mapping: Mapping[str, str] | None = None,
                 strict_loading: bool = True, allow_missing_keys: list[str] | tuple[str, ...] = (),
                 num_inference_steps: int = 10,
                 min_period: float = 4e-3, max_period: float = 4.0,
                 time_beta_alpha: float = 1.5, time_beta_beta: float = 1.0,
                 state_dim: int | None = None, action_dim: int | None = None,
                 max_state_dim: int | None = None, max_action_dim: int | None = None):
        super().__init__()
        self._dims = dict(state_dim=state_dim, action_dim=action_dim, max_state_dim=max_state_dim,
                          max_action_dim=max_action_dim)
        self._ops_cache: dict[str, tuple] = {}
        self.gradient_checkpointing = False
        self.vlm_backbone = _as_module(vlm_backbone, "vlm_backbone")
        self.llm_expert = _as_module(llm_expert, "llm_expert")
        self.proj_width = int(proj_width)
        self.chunk_length = int(n_action_steps)   # FluxVLA's config name for the chunk length
        self.num_inference_steps = int(num_inference_steps)
        self.min_period, self.max_period = float(min_period), float(max_period)
        self.time_beta = (float(time_beta_alpha), float(time_beta_beta))
        self.pretrained_name_or_path = pretrained_name_or_path
        self.name_mapping = dict(name_mapping or {})
        self.strict_loading = bool(strict_loading)
        self.allow_missing_keys = [str(k) for k in allow_missing_keys]
        self._build_projectors(state_proj=state_proj, action_in_proj=action_in_proj, action_out_proj=action_out_proj,
                               action_time_mlp_in=action_time_mlp_in, action_time_mlp_out=action_time_mlp_out)
        self._prepare_expert()
        self._check_shapes()
        if freeze_vlm_backbone:
            freeze(self.vlm_backbone)
        if freeze_llm_expert:
            freeze(self.llm_expert)
        self.use_lora = bool(use_lora)
        if self.use_lora:
            trainable = [n for n in self.projector_names()]
            trainable += [] if freeze_vlm_backbone else ["vlm_backbone"]
            trainable += [] if freeze_llm_expert else ["llm_expert"]
            apply_lora(self, rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout,
                       target_modules=lora_target_modules or [], trainable_modules=trainable)
        for module in self.unused_modules():
            freeze(module)

    def unused_modules(self) -> list[nn.Module]:
        """Weights that cannot affect the actions: the VLM's final norm and its last layer's queries,
        attention output and MLP (only that layer's keys/values are read by the expert). They stay in the state dict (so
        checkpoints load whole) but are frozen and skipped, so DDP sees no parameter without a gradient."""
        last = self.vlm_backbone.language_model.layers[-1]
        return [self.vlm_backbone.language_model.norm, last.self_attn.q_proj, last.self_attn.o_proj,
                last.post_attention_layernorm, last.mlp]

    # ---------------------------------------------------------------- construction
    def projector_names(self) -> tuple[str, ...]:
        return PROJECTOR_NAMES

    def _build_projectors(self, **projectors: Any) -> None:
        for name in self.projector_names():
            if projectors.get(name) is None:
                raise ValueError(f"{type(self).__name__}: `{name}` is required (a LinearProjector config)")
            setattr(self, name, _as_module(projectors[name], name))
        self._set_dims(self._internal_state_width(), self.action_in_proj.in_dim)

    def _internal_state_width(self) -> int:
        return self.state_proj.in_dim

    def _set_dims(self, state_width: int, action_width: int) -> None:
        """Model-internal widths (`max_state_dim`, `max_action_dim`: the projectors' widths; openpi pads
        both to 32) and the data's (`state_dim`, `action_dim`: LIBERO 8 / 7). Inputs are zero-padded to the
        internal width and outputs cut back to the data's, so a released checkpoint computes as released."""
        name = type(self).__name__
        dims = self._dims
        for key, width, proj in (("max_state_dim", state_width, "state_proj.in_dim"),
                                 ("max_action_dim", action_width, "action_in_proj.in_dim")):
            if dims[key] is not None and int(dims[key]) != width:
                raise ValueError(f"{name}: {key}={dims[key]} but {proj}={width}; the projectors run at the "
                                 f"model-internal width, so write {proj}={dims[key]} (openpi's releases use 32)")
        self.max_state_dim, self.max_action_dim = int(state_width), int(action_width)
        self.state_dim = int(dims["state_dim"] or self.max_state_dim)
        self.action_dim = int(dims["action_dim"] or self.max_action_dim)
        for data, internal in (("state_dim", "max_state_dim"), ("action_dim", "max_action_dim")):
            if not 0 < getattr(self, data) <= getattr(self, internal):
                raise ValueError(f"{name}: {data}={getattr(self, data)} must be in [1, {internal}="
                                 f"{getattr(self, internal)}]")

    def _prepare_expert(self) -> None:
        """Hook for variants that change the expert's layers before freezing / LoRA (π0.5: adaRMS)."""

    def _check_shapes(self) -> None:
        vlm, exp = self.vlm_backbone.config.text_config, self.llm_expert.config
        for key in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim"):
            if getattr(vlm, key) != getattr(exp, key):
                raise ValueError(f"vlm_backbone and llm_expert share attention, so their {key} must match: "
                                 f"{getattr(vlm, key)} vs {getattr(exp, key)}")
        if exp.hidden_size != self.proj_width:
            raise ValueError(f"proj_width={self.proj_width} must equal the llm_expert width {exp.hidden_size}")
        expect = self._projector_shapes()
        for name, (i, o) in expect.items():
            proj = getattr(self, name)
            if (i is not None and proj.in_dim != i) or proj.out_dim != o:
                raise ValueError(f"{name}: expected in_dim={i if i is not None else proj.in_dim}, out_dim={o}; "
                                 f"got in_dim={proj.in_dim}, out_dim={proj.out_dim}")
        if self.action_out_proj.out_dim != self.max_action_dim:
            raise ValueError(f"action_out_proj.out_dim={self.action_out_proj.out_dim} must equal "
                             f"action_in_proj.in_dim={self.max_action_dim}")

    def _projector_shapes(self) -> dict[str, tuple[int | None, int]]:
        w = self.proj_width
        return {"state_proj": (None, w), "action_in_proj": (None, w), "action_out_proj": (w, self.max_action_dim),
                "action_time_mlp_in": (2 * w, w), "action_time_mlp_out": (w, w)}

    @property
    def block_types(self) -> tuple[type[nn.Module], ...]:
        """The blocks FSDP may shard on their own (trainer/parallelize.py): modules whose forward runs
        as a call. The shared-attention loop calls each decoder layer's parts rather than the layer, so a
        layer's MLP is the block there (most of its weights); attention weights and norms stay with the root."""
        vlm, exp = self._stacks()
        return (type(self.vlm_backbone.vlm.model.vision_tower), type(vlm.layers[0].mlp), type(exp.layers[0].mlp))

    def gradient_checkpointing_enable(self) -> None:
        """Recompute each shared-attention layer pair (and SigLIP's layers) in backward instead of storing
        their activations (the runner's `enable_gradient_checkpointing`)."""
        self.gradient_checkpointing = True
        self.vlm_backbone.vlm.model.vision_tower.vision_model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})

    def load_pretrained(self) -> LoadReport | None:
        """Load `pretrained_name_or_path` (openpi's converter output or LeRobot's `model.`-prefixed file) through
        `name_mapping`. Strict unless `strict_loading=False`: anything missing, shape-mismatched or unexpected
        outside `allow_missing_keys` raises CheckpointMismatchError naming it."""
        if not self.pretrained_name_or_path:
            return None
        state, ignore = to_mapping_layout(read_state_dict(self.pretrained_name_or_path), self.name_mapping)
        try:
            return load_weights(self, state, self.name_mapping, strict=self.strict_loading, ignore=ignore,
                                allow_missing=self.allow_missing_keys, source_name=self.pretrained_name_or_path)
        except CheckpointMismatchError as err:
            raise CheckpointMismatchError(err.report, self.pretrained_name_or_path,
                                          padded_width_hint(err.report, self)) from None

    # ---------------------------------------------------------------- embeddings
    def _lang_tokens(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        name = type(self).__name__
        return need(batch, "lang_tokens", name), need(batch, "lang_masks", name).bool()

    def embed_prefix(self, batch: Mapping[str, torch.Tensor], fast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """[images of every camera, prompt] embeddings [B, P, width] and their validity [B, P].
        `fast` (inference only) runs SigLIP functionally with cached weights, see siglip_ops."""
        images = need(batch, "images", type(self).__name__)
        if images.ndim != 5:
            raise ValueError(f"batch['images'] must be [B, cameras, 3, H, W], got {tuple(images.shape)}")
        b, n = images.shape[:2]
        dtype = self.vlm_backbone.vlm.model.multi_modal_projector.linear.weight.dtype
        vision = self._inference_vision() if fast else None
        if vision is None:
            feats = self.vlm_backbone.embed_images(images.flatten(0, 1).to(dtype))
        else:
            proj = self.vlm_backbone.vlm.model.multi_modal_projector.linear
            feats = F.linear(vision(images.flatten(0, 1).to(dtype)), proj.weight, proj.bias)
        tokens = feats.shape[1]
        feats = feats.reshape(b, n * tokens, feats.shape[-1])
        img_masks = batch.get("img_masks")
        img_masks = torch.ones(b, n, dtype=torch.bool, device=images.device) if img_masks is None else img_masks.bool()
        img_valid = img_masks[:, :, None].expand(b, n, tokens).reshape(b, n * tokens)
        ids, lang_valid = self._lang_tokens(batch)
        lang = self.vlm_backbone.embed_tokens(ids).to(feats.dtype)
        return torch.cat([feats, lang], dim=1), torch.cat([img_valid, lang_valid], dim=1)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        return sinusoidal_time_embedding(t, self.proj_width, self.min_period, self.max_period)

    def embed_actions(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Action tokens [B, C, width] and the expert's norm conditioning (None for π0)."""
        a = self.action_in_proj(x_t)
        te = self.time_embedding(t).to(a.dtype)[:, None, :].expand_as(a)
        return self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([a, te], dim=-1)))), None

    def _step_embedder(self, times: torch.Tensor):
        """f(x_t, step) -> embed_actions(x_t, times[step]) for a known time grid. With plain Linear projectors
        (no LoRA wrapper) the two linear maps before the SiLU fold into one: W_a·(A·x + a) + W_t·τ(t) + b =
        (W_a·A)·x + [W_a·a + W_t·τ(t) + b], the bracket computed for every step at once."""
        lin_in, lin_a = self.action_time_mlp_in.projector, self.action_in_proj.projector
        lin_out = self.action_time_mlp_out.projector
        if not all(type(m) is nn.Linear for m in (lin_in, lin_a, lin_out)):
            return lambda x, i: self.embed_actions(x, times[i].expand(x.shape[0]))
        w = self.proj_width
        w_act, w_time = lin_in.weight[:, :w], lin_in.weight[:, w:]
        te = self.time_embedding(times).to(w_time.dtype)
        w_x = w_act @ lin_a.weight  # [width, action_dim]
        offset = F.linear(te, w_time, lin_in.bias) + F.linear(lin_a.bias, w_act)  # [steps, width]

        def embed(x: torch.Tensor, i: int):
            return F.linear(F.silu(F.linear(x, w_x) + offset[i]), lin_out.weight, lin_out.bias), None

        return embed

    def padded_states(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """batch['states'] [B, <= max_state_dim] zero-padded to [B, max_state_dim] (openpi's PadStatesAndActions)."""
        states = need(batch, "states", type(self).__name__)
        if states.ndim != 2 or states.shape[1] > self.max_state_dim:
            raise ValueError(f"{type(self).__name__}: batch['states'] must be [B, <= max_state_dim="
                             f"{self.max_state_dim}], got {tuple(states.shape)}")
        return F.pad(states, (0, self.max_state_dim - states.shape[1]))

    def embed_state(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        states = self.padded_states(batch)
        return self.state_proj(states.to(self.state_proj.projector.weight.dtype))[:, None, :]

    # ---------------------------------------------------------------- transformer passes
    def _stacks(self):
        return self.vlm_backbone.language_model, self.llm_expert.language_model

    def _rotary(self, h: torch.Tensor, positions: torch.Tensor):
        """RoPE cos/sin [B, 1, T, head_dim] (one head axis to broadcast over)."""
        cos, sin = self.vlm_backbone.language_model.rotary_emb(h, positions)
        return cos[:, None], sin[:, None]

    def _inference_ops(self, stack: str):
        """Per-layer ops (+ final norm) for sampling. Cached: rebuilt when a weight is updated in place
        (`_version`, e.g. an optimizer step or load_state_dict), after `.to()`, or after merge_lora."""
        module = self._stacks()[0 if stack == "vlm" else 1]
        if not self.weight_caching:  # parameter storage managed elsewhere (FSDP): never cache, call the modules
            return [layer_ops(layer, fast=False) for layer in module.layers], final_norm(module.norm, fast=False)
        return self._cached(stack, module, lambda: ([layer_ops(layer) for layer in module.layers],
                                                    final_norm(module.norm)))

    def _inference_vision(self):
        """SiglipInference for the vision tower (+ None if it cannot run functionally), cached like the layers."""
        if not self.weight_caching or type(self.vlm_backbone.vlm.model.multi_modal_projector.linear) is not nn.Linear:
            return None
        tower = self.vlm_backbone.vlm.model.vision_tower.vision_model
        return self._cached("vision", tower, lambda: SiglipInference.of(tower))

    def _cached(self, key: str, module: nn.Module, make):
        """`make()` cached under `key` until one of `module`'s parameters changes version (an in-place update);
        `_apply` (`.to()`) and merge_lora clear the cache."""
        cached = self._ops_cache.get(key)
        if cached is not None and cached[1] == tuple(p._version for p in cached[0]):
            return cached[2]
        params = list(module.parameters())
        value = make()
        self._ops_cache[key] = (params, tuple(p._version for p in params), value)
        return value

    def _apply(self, fn, *args, **kwargs):
        self._ops_cache.clear()  # .to() / .float() may swap parameter storage
        return super()._apply(fn, *args, **kwargs)

    def _joint_forward(self, prefix, prefix_valid, suffix, suffix_blocks, cond):
        """Training pass over [prefix, suffix]; returns the expert's normalised suffix output."""
        vlm, exp = self._stacks()
        b, p, s = prefix.shape[0], prefix.shape[1], suffix.shape[1]
        pos = torch.cat([prefix_valid.long(), torch.ones(b, s, dtype=torch.long, device=prefix.device)], 1).cumsum(1) - 1
        blocks = torch.cat([torch.zeros(p, dtype=torch.long, device=prefix.device), suffix_blocks.to(prefix.device)])
        key_valid = torch.cat([prefix_valid, torch.ones(b, s, dtype=torch.bool, device=prefix.device)], 1)
        mask = (blocks[None, :, None] >= blocks[None, None, :]) & key_valid[:, None, :]
        mask = mask[:, None]
        cos, sin = self._rotary(prefix, pos)
        cp, sp, cs, ss = cos[:, :, :p], sin[:, :, :p], cos[:, :, p:], sin[:, :, p:]
        scale = vlm.layers[0].self_attn.scaling
        last = len(vlm.layers) - 1

        def layer_pair(i: int, prefix: torch.Tensor, suffix: torch.Tensor):
            ov = layer_ops(vlm.layers[i], fast=False)  # module calls: autograd, LoRA, FSDP hooks
            oe = layer_ops(exp.layers[i], fast=False)
            xp, _ = ov.norm1(prefix, None)
            xs, gate = oe.norm1(suffix, cond)
            qs, ks, vs = oe.qkv(xs, cs, ss)
            if i < last:
                qp, kp, vp = ov.qkv(xp, cp, sp)
                out = _attend(torch.cat([qp, qs], 2), torch.cat([kp, ks], 2), torch.cat([vp, vs], 2), mask, scale)
                prefix = _mlp_block(ov, prefix + ov.o(out[:, :p]), None)
                out = out[:, p:]
            else:  # the prefix's last output is never read: its keys/values serve the suffix queries only
                kp, vp = ov.kv(xp, cp, sp)
                out = _attend(qs, torch.cat([kp, ks], 2), torch.cat([vp, vs], 2), mask[:, :, p:], scale)
            return prefix, _mlp_block(oe, residual(suffix, oe.o(out), gate), cond)

        for i in range(len(vlm.layers)):
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                prefix, suffix = torch.utils.checkpoint.checkpoint(layer_pair, i, prefix, suffix, use_reentrant=False)
            else:
                prefix, suffix = layer_pair(i, prefix, suffix)
        return final_norm(exp.norm, fast=False)(suffix, cond)[0]

    def _prefix_cache(self, prefix, prefix_valid, extra: int):
        """Per-layer key/value buffers [B, kv_heads, P + extra, head_dim] with the prefix filled in."""
        vlm, _ = self._stacks()
        b, p = prefix.shape[:2]
        pos = prefix_valid.long().cumsum(1) - 1
        mask = prefix_valid[:, None, None, :]
        cos, sin = self._rotary(prefix, pos)
        scale = vlm.layers[0].self_attn.scaling
        caches = []
        last = len(vlm.layers) - 1
        for i, ops in enumerate(self._inference_ops("vlm")[0]):
            x, _ = ops.norm1(prefix, None)
            q, k, v = ops.qkv(x, cos, sin) if i < last else (None, *ops.kv(x, cos, sin))
            kbuf = k.new_empty(b, k.shape[1], p + extra, k.shape[3])
            vbuf = torch.empty_like(kbuf)
            kbuf[:, :, :p], vbuf[:, :, :p] = k, v
            caches.append((kbuf, vbuf))
            if i < last:  # the last layer's output is never read: only its keys/values are
                prefix = _mlp_block(ops, prefix + ops.o(_attend(q, k, v, mask, scale)), None)
        return caches

    def _suffix_with_cache(self, h, caches, offset, mask, cos, sin, cond, ops=None):
        """Expert layers for tokens at cache slots [offset, offset + S), attending every slot before them.
        `ops` = (per-layer ops, final norm) from `_inference_ops('expert')`."""
        _, exp = self._stacks()
        layers, norm = ops or self._inference_ops("expert")
        end = offset + h.shape[1]
        scale = exp.layers[0].self_attn.scaling
        sub_mask = None if mask is None else mask[..., :end]
        for op, (kbuf, vbuf) in zip(layers, caches):
            x, gate = op.norm1(h, cond)
            q, k, v = op.qkv(x, cos, sin)
            kbuf[:, :, offset:end], vbuf[:, :, offset:end] = k, v
            out = _attend(q, kbuf[:, :, :end], vbuf[:, :, :end], sub_mask, scale)
            h = _mlp_block(op, residual(h, op.o(out), gate), cond)
        return norm(h, cond)[0]

    # ---------------------------------------------------------------- public API
    def _suffix_prefix_tokens(self, batch) -> list[torch.Tensor]:
        """Suffix tokens that come before the actions (π0: the state token)."""
        return [self.embed_state(batch)]

    def velocity(self, batch, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        prefix, valid = self.embed_prefix(batch)
        actions, cond = self.embed_actions(x_t, t)
        head = self._suffix_prefix_tokens(batch)
        suffix = torch.cat(head + [actions], dim=1)
        # Block ids: each leading suffix token its own block, then one block for all actions.
        blocks = torch.cat([torch.arange(1, len(head) + 1), torch.full((actions.shape[1],), len(head) + 1)])
        out = self._joint_forward(prefix, valid, suffix.to(prefix.dtype), blocks, cond)
        return self.action_out_proj(out[:, -self.chunk_length:])

    def sample_time(self, batch_size: int, device) -> torch.Tensor:
        beta = torch.distributions.Beta(torch.tensor(self.time_beta[0]), torch.tensor(self.time_beta[1]))
        return (beta.sample((batch_size,)) * 0.999 + 0.001).to(device)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Flow-matching loss; the flow's noise and time are the batch's `noise` / `time` if it has them,
        else drawn from the global RNG (vla/models/base.py)."""
        noise, time = batch.get("noise"), batch.get("time")
        actions = need(batch, "actions", type(self).__name__)
        if actions.ndim != 3 or actions.shape[1] != self.chunk_length or actions.shape[2] < self.action_dim:
            raise ValueError(f"batch['actions'] must be [B, {self.chunk_length}, >={self.action_dim}], "
                             f"got {tuple(actions.shape)}")
        pad = self.max_action_dim - self.action_dim
        actions = F.pad(actions[..., :self.action_dim].float(), (0, pad))  # zero targets in the padded dims
        noise = torch.randn_like(actions) if noise is None else self._check_noise(noise, actions.shape[0])
        t = self.sample_time(actions.shape[0], actions.device) if time is None else time.to(actions.device)
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
        v = self.velocity(batch, x_t, t).float()
        err = (v - (noise - actions)) ** 2
        mask = batch.get("action_masks")
        if mask is None:
            loss = err.mean()
        else:  # openpi trains the padded dims too (towards zero actions); the data's own padding is masked
            m = F.pad(mask[..., :self.action_dim].to(err.dtype), (0, pad), value=1.0)
            loss = (err * m).sum() / m.sum().clamp(min=1.0)
        return {"loss": loss, "mse": err.mean().detach()}

    def _check_noise(self, noise: torch.Tensor, batch_size: int) -> torch.Tensor:
        want = (batch_size, self.chunk_length, self.max_action_dim)
        if tuple(noise.shape) != want:
            raise ValueError(f"{type(self).__name__}: noise must be {list(want)} (the model-internal "
                             f"max_action_dim), got {list(noise.shape)}")
        return noise.float()

    @torch.no_grad()
    def sample_actions(self, batch: Mapping[str, torch.Tensor], num_steps: int | None = None,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
        steps = int(num_steps or self.num_inference_steps)
        prefix, valid = self.embed_prefix(batch, fast=True)
        b, p = valid.shape
        c = self.chunk_length
        head = self._suffix_prefix_tokens(batch)
        n_head = sum(h.shape[1] for h in head)
        caches = self._prefix_cache(prefix, valid, n_head + c)
        key_valid = torch.cat([valid, valid.new_ones(b, n_head + c)], 1)
        mask = None if bool(key_valid.all()) else key_valid[:, None, None, :]
        start = valid.long().sum(1, keepdim=True)  # suffix positions continue after the valid prefix tokens
        offset = p
        ops = self._inference_ops("expert")
        for h in head:  # state token(s): they never see the actions, so they are computed once
            pos = start + (offset - p) + torch.arange(h.shape[1], device=h.device)
            cos, sin = self._rotary(h, pos)
            self._suffix_with_cache(h.to(prefix.dtype), caches, offset, mask, cos, sin, None, ops)
            offset += h.shape[1]
        pos = start + n_head + torch.arange(c, device=prefix.device)
        cos, sin = self._rotary(prefix, pos)
        x = (torch.randn(b, c, self.max_action_dim, device=prefix.device) if noise is None
             else self._check_noise(noise, b).to(prefix.device))
        dt = -1.0 / steps
        embed = self._step_embedder(euler_time_grid(steps, prefix.device))
        for i in range(steps):
            tokens, cond = embed(x.to(prefix.dtype), i)
            out = self._suffix_with_cache(tokens, caches, offset, mask, cos, sin, cond, ops)
            x = x + dt * self.action_out_proj(out).float()
        return x[..., :self.action_dim]

    def predict_action(self, batch: Mapping[str, torch.Tensor], *, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.sample_actions(batch, noise=noise)
