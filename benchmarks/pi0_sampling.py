"""Our PI0FlowMatching.sample_actions vs transformers' PI0ForConditionalGeneration.sample_actions.

Same weights (copied through our name_mapping loader), same inputs, noise and number of steps, measured
interleaved in one run; prints the median times and
`RESULT pi0_sampling_vs_transformers <ours/theirs> goal <= 0.5 PASS|FAIL`.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pi0_sampling.py [--config tiny|small] [--steps 10] [--repeats 15]

Configs: `tiny` is configs/pi0/..._tiny.py's widths (the demo model); `small` is wider and deeper (a few
million parameters, 224 px images) so the matrix math, not Python, dominates more.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vla.config import Config, build  # noqa: E402
from vla.models.loading import load_weights  # noqa: E402
from vla.models.pi0 import TRANSFORMERS_PI0_NAME_MAPPING  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOAL = 0.5


def model_cfg(name: str) -> dict:
    cfg = Config.fromfile(REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py")["model"]
    cfg = copy.deepcopy(dict(cfg))
    if name == "small":
        vlm = cfg["vlm_backbone"]["vlm_config"]
        vlm["text_config"].update(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                  num_attention_heads=4, head_dim=64)
        vlm["vision_config"].update(hidden_size=128, intermediate_size=512, num_hidden_layers=2, image_size=224)
        vlm["projection_dim"] = 256
        cfg["llm_expert"]["llm_config"].update(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                                               num_attention_heads=4, head_dim=64)
        w = 128
        cfg.update(proj_width=w, n_action_steps=50)
        cfg["state_proj"].update(out_dim=w)
        cfg["action_in_proj"].update(out_dim=w)
        cfg["action_out_proj"].update(in_dim=w)
        cfg["action_time_mlp_in"].update(in_dim=2 * w, out_dim=w)
        cfg["action_time_mlp_out"].update(in_dim=w, out_dim=w)
    elif name != "tiny":
        raise SystemExit(f"unknown --config {name!r} (tiny or small)")
    return cfg


def transformers_model(cfg: dict):
    from transformers import PI0Config, PI0ForConditionalGeneration

    vlm = copy.deepcopy(cfg["vlm_backbone"]["vlm_config"])
    vlm.update(model_type="paligemma")
    vlm["text_config"]["model_type"] = "gemma"
    vlm["vision_config"].update(model_type="siglip_vision_model", vision_use_head=False)
    dit = dict(model_type="gemma", **cfg["llm_expert"]["llm_config"])
    config = PI0Config(vlm_config=vlm, dit_config=dit, chunk_size=cfg["n_action_steps"],
                       max_state_dim=cfg["state_proj"]["in_dim"], max_action_dim=cfg["action_in_proj"]["in_dim"])
    return PI0ForConditionalGeneration(config).eval()


def inputs(cfg: dict, batch_size: int, lang_len: int = 24):
    vision = cfg["vlm_backbone"]["vlm_config"]["vision_config"]
    size, patch = vision["image_size"], vision["patch_size"]
    vocab = cfg["vlm_backbone"]["vlm_config"]["text_config"]["vocab_size"]
    g = torch.Generator().manual_seed(0)
    batch = dict(images=torch.randn(batch_size, 2, 3, size, size, generator=g),
                 img_masks=torch.ones(batch_size, 2, dtype=torch.bool),
                 lang_tokens=torch.randint(5, vocab, (batch_size, lang_len), generator=g),
                 lang_masks=torch.ones(batch_size, lang_len, dtype=torch.bool),
                 states=torch.randn(batch_size, cfg["state_proj"]["in_dim"], generator=g))
    image_ids = torch.full((batch_size, 2 * (size // patch) ** 2), cfg["vlm_backbone"]["vlm_config"]["image_token_id"])
    theirs = dict(state=batch["states"], input_ids=torch.cat([image_ids, batch["lang_tokens"]], 1),
                  pixel_values=batch["images"], pixel_attention_mask=batch["img_masks"],
                  attention_mask=torch.ones(batch_size, image_ids.shape[1] + lang_len, dtype=torch.long))
    noise = torch.randn(batch_size, cfg["n_action_steps"], cfg["action_in_proj"]["in_dim"], generator=g)
    return batch, theirs, noise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = model_cfg(args.config)
    torch.manual_seed(0)
    ref = transformers_model(cfg)
    ours = build(cfg).eval()
    report = load_weights(ours, ref.state_dict(), TRANSFORMERS_PI0_NAME_MAPPING)
    assert not report.missing and not report.mismatched, report.summary()
    batch, theirs, noise = inputs(cfg, args.batch_size)

    def run_ours():
        return ours.sample_actions(batch, num_steps=args.steps, noise=noise)

    def run_theirs():
        return ref.sample_actions(noise=noise, num_steps=args.steps, **theirs)

    with torch.no_grad():
        diff = (run_ours() - run_theirs()).abs().max().item()  # also the warm-up
        times = {"ours": [], "transformers": []}
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
            for name, fn in (("ours", run_ours), ("transformers", run_theirs)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["ours"] / med["transformers"]
    params = sum(p.numel() for p in ours.parameters())
    print(f"config={args.config} params={params:,} steps={args.steps} batch={args.batch_size} "
          f"repeats={args.repeats} max|diff|={diff:.2e}")
    print(f"median sample_actions: ours {med['ours'] * 1000:.2f} ms, transformers {med['transformers'] * 1000:.2f} ms")
    print(f"RESULT pi0_sampling_vs_transformers {ratio:.2f} goal <= {GOAL} {'PASS' if ratio <= GOAL else 'FAIL'}")


if __name__ == "__main__":
    main()
