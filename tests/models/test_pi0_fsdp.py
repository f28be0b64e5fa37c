"""FSDP2 over π0's blocks (trainer/parallelize.py: vision tower + every layer MLP, then the root) gives the same loss and
gradients as the plain model, every trainable weight gets a gradient, and `sample_actions` works once
registered as an FSDP forward method."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO, free_port

SCRIPT = textwrap.dedent("""
    import os, torch, torch.distributed as dist
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
    from vla.config import build
    from tests.models.conftest import tiny_pi0_cfg, make_batch
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model, ref = build(tiny_pi0_cfg()), build(tiny_pi0_cfg())
    ref.load_state_dict(model.state_dict())
    from trainer.parallelize import fsdp_blocks
    model.weight_caching = False   # what apply_fsdp does: FSDP refills parameter storage in place
    for unit in fsdp_blocks(model):
        fully_shard(unit)
    fully_shard(model)
    register_fsdp_forward_method(model, "sample_actions")
    batch, noise, t = make_batch(), torch.randn(2, 4, 7), torch.tensor([0.3, 0.6])
    loss, ref_loss = model(dict(batch, noise=noise, time=t))["loss"], ref(dict(batch, noise=noise, time=t))["loss"]
    loss.backward(); ref_loss.backward()
    assert torch.allclose(loss, ref_loss), (loss, ref_loss)
    worst = 0.0
    ref_params = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        # every trainable weight gets a gradient (DDP without find_unused_parameters relies on it)
        assert (p.grad is not None) == p.requires_grad == (ref_params[name].grad is not None), name
        if p.grad is not None:
            worst = max(worst, (p.grad.full_tensor() - ref_params[name].grad).abs().max().item())
    assert worst < 1e-6, worst
    model.eval(); ref.eval()
    torch.testing.assert_close(model.sample_actions(batch, num_steps=2, noise=noise),
                               ref.sample_actions(batch, num_steps=2, noise=noise))
    dist.destroy_process_group()
    print("FSDP_OK")
""")


def test_fsdp2_units_match_plain_model():
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
               LOCAL_RANK="0", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "FSDP_OK" in proc.stdout, proc.stderr[-3000:]
