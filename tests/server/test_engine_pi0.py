"""The tiny π0 config served from a real work dir: engine output equals the model sampled with
the same noise and denormalised by hand; the three transports agree; a LoRA checkpoint is merged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_server.engine import load_engine
from tests.conftest import REPO
from tests.server import engine_fixtures as fx
from tests.server.conftest import TRANSPORTS, client, start_server
from tests.server.test_engine import sim_obs
from vla import checkpoint as ckpt
from vla.config import Config, build
from vla.data.tiny_tokenizer import build_tiny_tokenizer
from vla.io import atomic_write_text
from vla.models.loading import load_weights
from vla.normalize import load_statistics, save_statistics

CONFIGS = {"full": REPO / "configs/pi0/pi0_paligemma_libero_10_full_finetune_tiny.py",
           "lora": REPO / "configs/pi0/pi0_paligemma_libero_10_lora_finetune_tiny.py",
           "pi05": REPO / "configs/pi05/pi05_paligemma_libero_10_full_finetune_tiny.py",
           "gr00t": REPO / "configs/gr00t/gr00t_eagle_3b_libero_10_full_train_tiny.py"}


def _tokenizer_options(cfg: Config, tok: str) -> list[str]:
    """`a.b.0.model_path=tok` for every PretrainedTokenizer in the config."""
    opts = []

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "PretrainedTokenizer":
                opts.append(f"{path}.model_path={tok}")
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}.{i}")

    walk(dict(cfg), "")
    return opts


def make_pi0_work_dir(root, tok, variant: str):
    cfg = Config.fromfile(CONFIGS[variant])
    cfg.merge_options(_tokenizer_options(cfg, str(tok)))
    cfg.dump(root)
    torch.manual_seed(0)
    import vla.models  # noqa: F401

    model = build(cfg["model"])
    with torch.no_grad():   # "trained" weights: LoRA B non-zero so merging matters
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    ckpt.save_weights(root, "checkpoint_epoch_1.pt", model.state_dict())
    atomic_write_text(root / "latest", "checkpoint_epoch_1.pt")
    save_statistics(root / "dataset_statistics.json", "libero_10_no_noops", fx.random_statistics(7))
    return cfg, model.eval()


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def pi0_dir(tmp_path_factory, tok):
    root = tmp_path_factory.mktemp("pi0") / "run"
    cfg, model = make_pi0_work_dir(root, tok, "full")
    return root, cfg


def _denorm_by_hand(raw: np.ndarray, stats) -> np.ndarray:
    out = raw[:, :7].astype(np.float64).copy()
    out[:, :6] = out[:, :6] * (stats.action.std[:6] + 1e-8) + stats.action.mean[:6]
    out[:, 6] = np.where(out[:, 6] >= 0, 1.0, -1.0)
    return out


def test_pi0_engine_matches_the_model_sampled_with_the_same_noise(pi0_dir):
    root, cfg = pi0_dir
    engine = load_engine(root)
    assert engine.info().model == "PI0FlowMatching" and engine.info().chunk_length == 10
    obs, _ = sim_obs()
    obs["seed"] = 1234
    other, _ = sim_obs(seed=11, prompt="turn on the stove and put the moka pot on it")
    got = fx.infer(engine, obs, other)
    assert got[0].shape == (10, 7) and not np.allclose(got[0][:, :6], got[1][:, :6])
    ref = build(cfg["model"])
    load_weights(ref, str(root / "checkpoint_epoch_1.pt"), strict=True)
    ref.eval()
    batch = engine.collate([engine.prepare(obs)])
    assert batch["images"].shape == (1, 2, 3, 56, 56) and batch["states"].shape == (1, 8)
    with torch.no_grad():
        noise = torch.randn(1, 10, engine.noise_dim, generator=torch.Generator().manual_seed(1234))
        raw = ref.sample_actions({k: v for k, v in batch.items() if k != "_request_seeds"},
                                 noise=noise)[0].numpy()   # the request's seed gives its noise
    stats = load_statistics(root, "libero_10_no_noops")
    np.testing.assert_allclose(got[0], _denorm_by_hand(raw, stats), rtol=1e-4, atol=1e-4)
    assert engine.noise_dim == 32   # the flow runs at openpi's padded width, the reply has the data's 7
    np.testing.assert_allclose(fx.infer(engine, other, obs)[1], got[0], rtol=1e-5, atol=1e-6)


def test_fresh_noise_per_request_unless_seeded_or_fixed(pi0_dir):
    root, _ = pi0_dir
    obs, _ = sim_obs()
    engine = load_engine(root)
    a, b = fx.infer(engine, obs, obs)
    assert not np.allclose(a, b)                       # openpi draws new noise for every call
    seeded = dict(obs, seed=5)
    c, d = fx.infer(engine, seeded, seeded)
    np.testing.assert_array_equal(c, d)                # the same seed, the same chunk
    fixed = load_engine(root, noise="fixed")
    e, f = fx.infer(fixed, obs, dict(obs, seed=9))
    np.testing.assert_array_equal(e, f)                # --noise fixed: one noise for every request


def test_zero_noise_samples_from_the_noise_mean_and_comes_from_the_config(pi0_dir, tmp_path):
    import json
    import shutil

    from policy_server.engine import EngineError

    root, _ = pi0_dir
    obs, _ = sim_obs()
    zero = load_engine(root, noise="zero")
    got = fx.infer(zero, obs, dict(obs, seed=9))
    np.testing.assert_array_equal(got[0], got[1])      # the request's seed does not matter
    batch = zero.collate([zero.prepare(obs)])
    with torch.no_grad():
        raw = zero.model.predict_action({k: v for k, v in batch.items() if k != "_request_seeds"},
                                        noise=torch.zeros(1, 10, zero.noise_dim))
    np.testing.assert_allclose(got[0], zero.denormalize(raw.numpy())[0], rtol=1e-5, atol=1e-6)
    # eval.noise in the work dir's config is the default; an explicit argument wins; a bad value is named.
    copy = tmp_path / "wd"
    shutil.copytree(root, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["eval"]["noise"] = "zero"
    atomic_write_text(copy / "config.json", json.dumps(cfg))
    np.testing.assert_allclose(fx.infer(load_engine(copy), obs)[0], got[0], rtol=1e-5, atol=1e-6)
    assert load_engine(copy, noise="fresh").noise_mode == "fresh"
    cfg["eval"]["noise"] = "gaussian"
    atomic_write_text(copy / "config.json", json.dumps(cfg))
    with pytest.raises(EngineError, match=r"config\.json: eval\.noise='gaussian'"):
        load_engine(copy)


def test_pi0_three_transports_agree(pi0_dir):
    from policy_server.batcher import BatcherConfig

    root, _ = pi0_dir
    engine = load_engine(root)
    obs, _ = sim_obs()
    obs["seed"] = 77   # travels on every transport (gRPC: InferRequest.seed)
    expected = fx.infer(engine, obs)[0]
    server = start_server(engine, batcher=BatcherConfig(max_batch_size=4, max_queue_delay_ms=2))
    try:
        for transport in TRANSPORTS:
            with client(server, transport, timeout_s=60) as c:
                assert c.server_info().checkpoint == "checkpoint_epoch_1.pt"
                np.testing.assert_allclose(c.infer(obs)["actions"], expected, rtol=1e-4, atol=1e-4)
    finally:
        server.stop()


def test_pi0_lora_checkpoint_is_merged(tmp_path, tok):
    cfg, model = make_pi0_work_dir(tmp_path / "run", tok, "lora")
    engine = load_engine(tmp_path / "run")
    from vla.models.lora import has_lora

    assert has_lora(model) and not has_lora(engine.model)
    obs, _ = sim_obs()
    batch = engine.collate([engine.prepare(dict(obs, seed=3))])
    with torch.no_grad():
        noise = torch.randn(1, 10, engine.noise_dim, generator=torch.Generator().manual_seed(3))
        expected = model.sample_actions({k: v for k, v in batch.items() if k != "_request_seeds"},
                                        noise=noise)[0].numpy()
    np.testing.assert_allclose(engine.predict(batch)[0], expected, rtol=1e-4, atol=1e-4)


def test_cli_serves_a_work_dir(pi0_dir):
    import subprocess
    import sys

    from tests.conftest import free_port
    from vla.wire import connect

    root, _ = pi0_dir
    gport, hport = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "policy_server.cli", "--work-dir", str(root), "--grpc-port",
                             str(gport), "--http-port", str(hport), "--max-batch-size", "2"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        c = connect(f"ws://127.0.0.1:{hport}", token="", retries=0, timeout_s=60)
        c.wait_ready(timeout_s=120, poll_s=0.2)
        obs, _ = sim_obs()
        obs["seed"] = 21
        expected = fx.infer(load_engine(root), obs)[0]
        np.testing.assert_allclose(c.infer(obs)["actions"], expected, rtol=1e-4, atol=1e-4)
        assert c.server_info().model_version.startswith("checkpoint_epoch_1-")
        c.close()
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_reports_a_bad_work_dir(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "policy_server.cli", "--work-dir", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "config.json: missing" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("family", ["pi05", "gr00t"])
def test_other_families_serve_and_identical_requests_get_identical_actions(tmp_path, tok, family):
    cfg, model = make_pi0_work_dir(tmp_path / "run", tok, family)
    engine = load_engine(tmp_path / "run")
    assert engine.info().model == cfg["model"]["type"]
    obs, _ = sim_obs()
    obs["seed"] = 8
    other, _ = sim_obs(seed=5, prompt="pick up the book and place it in the back compartment of the caddy")
    a, b, c = fx.infer(engine, obs, other, obs)
    assert a.shape == (engine.chunk_length, 7) and np.isfinite(a).all()
    np.testing.assert_allclose(a, c, atol=1e-5)            # same start noise for every request
    np.testing.assert_allclose(fx.infer(engine, obs)[0], a, atol=1e-4)


def test_statistics_that_do_not_fit_fail_the_start_instead_of_serving_errors(pi0_dir, tmp_path):
    """dataset_statistics.json with 5 proprio dims for an 8-dim LIBERO state: warm-up runs the real
    request path, fails, and the server exits 2 naming the statistics - it never reports ready."""
    import json
    import shutil
    import subprocess
    import sys
    import urllib.request

    from tests.conftest import free_port

    root = tmp_path / "run"
    shutil.copytree(pi0_dir[0], root)
    stats_path = root / "dataset_statistics.json"
    stats = json.loads(stats_path.read_text())
    for block in stats.values():
        for key, value in block["proprio"].items():
            block["proprio"][key] = value[:5]
    stats_path.write_text(json.dumps(stats))
    hport = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "policy_server.cli", "--work-dir", str(root), "--grpc-port",
                             str(free_port()), "--http-port", str(hport)], cwd=REPO, stderr=subprocess.PIPE,
                            text=True)
    try:
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err[-3000:]
    line = next(ln for ln in err.splitlines() if ln.startswith("policy_server: "))
    assert "will not report ready" in line and "statistics" in line and "5" in line, line
    assert "Traceback" not in err
    try:   # the process is gone: nothing answers /readyz
        urllib.request.urlopen(f"http://127.0.0.1:{hport}/readyz", timeout=2)
        raise AssertionError("a server still answers")
    except OSError:
        pass
