"""name_mapping loading: prefix remap, .safetensors and .pt, the mismatch report and strict mode."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vla.models.loading import CheckpointMismatchError, load_weights, read_state_dict, remap_state_dict
from vla.models.lora import apply_lora
from vla.models.projector import LinearProjector


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 6))
        self.state_proj = LinearProjector(3, 6)


def _theirs(model: Toy) -> dict[str, torch.Tensor]:
    # The same weights under another project's names, plus a key we have no use for.
    sd = {k.replace("backbone.", "model.encoder.").replace("state_proj.projector", "model.state_proj"):
          torch.randn_like(v) for k, v in model.state_dict().items()}
    sd["model.extra.weight"] = torch.zeros(2)
    return sd


MAPPING = {"backbone": "model.encoder", "state_proj.projector": "model.state_proj"}


def test_remap_longest_prefix_wins_and_exact_boundary():
    sd = {"a.b.w": torch.zeros(1), "a.bc.w": torch.zeros(1), "a.x": torch.zeros(1)}
    out = remap_state_dict(sd, {"P": "a", "Q": "a.b"})
    assert set(out) == {"Q.w", "P.bc.w", "P.x"}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_load_with_mapping_reports_only_unexpected(tmp_path, suffix):
    model = Toy()
    theirs = _theirs(model)
    path = tmp_path / f"ckpt{suffix}"
    save_file(theirs, str(path)) if suffix == ".safetensors" else torch.save(theirs, path)
    report = load_weights(model, path, MAPPING)
    assert report.missing == [] and report.mismatched == []
    assert report.unexpected == ["model.extra.weight"]
    assert torch.equal(model.state_proj.projector.weight, theirs["model.state_proj.weight"])
    assert torch.equal(model.backbone[1].bias, theirs["model.encoder.1.bias"])
    with pytest.raises(CheckpointMismatchError, match="model.extra.weight"):
        load_weights(Toy(), path, MAPPING, strict=True)


def test_shape_mismatch_and_missing_are_reported_and_strict_leaves_model_untouched(tmp_path):
    model = Toy()
    theirs = _theirs(model)
    del theirs["model.extra.weight"], theirs["model.encoder.0.bias"]
    theirs["model.state_proj.weight"] = torch.zeros(6, 32)  # openpi pads the state to 32
    before = model.state_proj.projector.weight.clone()
    with pytest.raises(CheckpointMismatchError) as err:
        load_weights(model, theirs, MAPPING, strict=True)
    assert err.value.report.missing == ["backbone.0.bias"]
    assert err.value.report.mismatched == [("state_proj.projector.weight", (6, 32), (6, 3))]
    assert torch.equal(model.state_proj.projector.weight, before)
    report = load_weights(model, theirs, MAPPING)  # lenient: loads the rest
    assert torch.equal(model.backbone[1].weight, theirs["model.encoder.1.weight"])
    assert "shape mismatch 1" in report.summary()


def test_plain_checkpoint_fills_lora_wrapped_model():
    model = Toy()
    theirs = _theirs(model)
    del theirs["model.extra.weight"]
    apply_lora(model, rank=2, target_modules=["state_proj.projector"])
    report = load_weights(model, theirs, MAPPING, strict=True)
    assert report.ok
    assert torch.equal(model.state_proj.projector.base_layer.weight, theirs["model.state_proj.weight"])


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_state_dict(tmp_path / "nope.pt")
    bad = tmp_path / "w.npz"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported checkpoint format"):
        read_state_dict(bad)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, wrapped)
    assert list(read_state_dict(wrapped)) == ["w"]
