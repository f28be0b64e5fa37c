"""The tiny GR00T config end to end: its own data section on a synthetic LIBERO dataset feeds its model,
and a LoRA-trained model merged for serving predicts what it predicted before the merge."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from vla.config import Config, build
from vla.data.synthetic import write_synthetic_libero_dataset
from vla.data.tiny_tokenizer import build_tiny_tokenizer
from vla.models.loading import load_weights
from vla.models.lora import has_lora, merge_lora

from ..conftest import REPO

TINY = REPO / "configs/gr00t/gr00t_eagle_3b_libero_10_full_train_tiny.py"


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    root = write_synthetic_libero_dataset(tmp_path_factory.mktemp("gr00t_data") / "libero", num_episodes=2,
                                          episode_length=[12, 9], image_size=48)
    tok = build_tiny_tokenizer(tmp_path_factory.mktemp("gr00t_tok") / "tokenizer")
    return Config.fromfile(TINY, [
        f"train_dataloader.dataset.datasets.data_root_path={root}",
        f"train_dataloader.dataset.datasets.transforms.2.tokenizer.model_path={tok}",
        f"runner.tokenizer.model_path={tok}",
        f"eval.dataset.transforms.2.tokenizer.model_path={tok}",
    ])


@pytest.fixture(scope="module")
def tiny_batch(tiny_cfg):
    dataset = build(tiny_cfg.train_dataloader["dataset"])
    loader = DataLoader(dataset, batch_size=2, collate_fn=build(tiny_cfg.runner["collator"]))
    return next(iter(loader))


def test_tiny_config_data_feeds_its_model(tiny_cfg, tiny_batch):
    torch.manual_seed(0)
    model = build(tiny_cfg.model)
    assert tiny_batch["images"].shape[-2:] == (32, 32) and tiny_batch["actions"].shape == (2, 10, 14)
    out = model(tiny_batch)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    grads = [p.grad for p in model.vlm_backbone.vlm.vision_model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)  # the loss reaches the vision tower
    actions = model.eval().predict_action(tiny_batch)
    assert actions.shape == (2, 10, 7) and torch.isfinite(actions).all()


def test_lora_checkpoint_merges_for_serving(tiny_cfg, tiny_batch):
    """Train adapters, save the state dict (adapter layout), rebuild from config as the server does, load
    strictly, merge: same actions as the trained model, and the merged keys are the plain model's."""
    torch.manual_seed(0)
    cfg = {**tiny_cfg.model, "use_lora": True, "lora_rank": 4}
    model = build(cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = model(tiny_batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    noise = torch.randn(2, 10, 32)  # the release's padded action width
    want = model.eval().predict_action(tiny_batch, noise=noise)

    served = build(cfg)
    report = load_weights(served, model.state_dict(), strict=True)
    assert report.ok
    assert has_lora(served)
    merge_lora(served)
    assert not has_lora(served)
    torch.testing.assert_close(served.eval().predict_action(tiny_batch, noise=noise), want, rtol=1e-4, atol=1e-5)
    assert set(served.state_dict()) == set(build(tiny_cfg.model).state_dict())


def test_image_token_count_comes_from_the_model(tiny_cfg):
    """The guide's GR00T transforms write no tokens_per_image: the trainer and the server bind the model's."""
    from vla.config import build as build_cfg
    from vla.data.transforms import ProcessPromptsWithImage
    from vla.data.binding import bind_model, dataset_transforms

    model = build_cfg(tiny_cfg["model"])
    tok = dict(tiny_cfg.runner["tokenizer"])
    t = ProcessPromptsWithImage(tokenizer=tok, max_len=48, num_images=2)
    with pytest.raises(ValueError, match="tokens_per_image is not known yet"):
        t({"prompt": "pick it up"})

    class Part:
        transforms = [t]

    class Whole:
        datasets = [Part()]

    bind_model(dataset_transforms(Whole()), model)
    out = t({"prompt": "pick it up"})
    image_token = model.vlm_backbone.image_token_index
    assert model.tokens_per_image == 4
    assert int((out["lang_tokens"] == image_token).sum()) == 2 * model.tokens_per_image
    wrong = ProcessPromptsWithImage(tokenizer=tok, max_len=48, num_images=2,
                                    tokens_per_image=model.tokens_per_image + 1)
    with pytest.raises(ValueError, match=f"write tokens_per_image={model.tokens_per_image}"):
        wrong.bind_model(tokens_per_image=model.tokens_per_image)
