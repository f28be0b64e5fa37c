"""The model engine on a real work dir: actions equal the model's output run through the
transforms and statistics by hand; sim and openpi keys agree; statistics matter; LoRA merges;
all three transports return the same actions."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from policy_server.engine import EngineError, load_engine
from policy_server.schema import example_observation
from vla.libero import quat2axisangle
from tests.server import engine_fixtures as fx
from tests.server.conftest import TRANSPORTS, client, start_server
from vla.data.image_ops import resize_images
from vla.data.tiny_tokenizer import build_tiny_tokenizer
from vla.normalize import load_statistics, save_statistics
from vla.wire.errors import ErrorCode, PolicyError


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory, tok_dir):
    root, _ = fx.make_work_dir(tmp_path_factory.mktemp("wd") / "run", tok_dir)
    return root


def sim_obs(seed: int = 3, prompt: str = "put both the alphabet soup and the tomato sauce in the basket"):
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = 0.7
    return {
        "agentview_image": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        "robot0_eye_in_hand_image": rng.integers(0, 256, (40, 40, 3), dtype=np.uint8),
        "robot0_eef_pos": rng.normal(size=3),
        "robot0_eef_quat": np.concatenate([axis * math.sin(angle / 2), [math.cos(angle / 2)]]),
        "robot0_gripper_qpos": np.array([0.03, -0.03]),
        "prompt": prompt,
    }, axis * angle


def by_hand(work_dir, obs, axis_angle, tok_dir):
    """The whole eval path written out with numpy, the tokenizer and the model."""
    from transformers import AutoTokenizer

    stats = load_statistics(work_dir, fx.STAT_NAME)
    cfg = json.loads((work_dir / "config.json").read_text())
    model = fx.ServerTestModel(**{k: v for k, v in cfg["model"].items() if k != "type"})
    from vla.models.loading import load_weights

    load_weights(model, str(work_dir / "checkpoint_step_3.pt"), strict=True)
    images = []
    for i, key in enumerate(("agentview_image", "robot0_eye_in_hand_image")):
        frame = obs[key][::-1, ::-1]                                # LIBERO renders upside down
        frame = resize_images(np.ascontiguousarray(frame), fx.IMAGE, fx.IMAGE)[0].astype(np.float32)
        images.append(((frame - np.array(fx.MEANS[i])) / np.array(fx.STDS[i])).transpose(2, 0, 1))
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    ids = tok(obs["prompt"], add_special_tokens=True)["input_ids"][:fx.MAX_LEN]
    tokens = np.full(fx.MAX_LEN, tok.pad_token_id)
    tokens[:len(ids)] = ids
    mask = np.arange(fx.MAX_LEN) < len(ids)
    state = np.concatenate([obs["robot0_eef_pos"], axis_angle, obs["robot0_gripper_qpos"]])
    state = (state - stats.proprio.mean) / (stats.proprio.std + 1e-8)
    state = np.concatenate([state, np.zeros(2)])                    # padded to state_dim 10
    batch = {"images": torch.tensor(np.stack(images)[None], dtype=torch.float32),
             "lang_tokens": torch.tensor(tokens[None]), "lang_masks": torch.tensor(mask[None]),
             "states": torch.tensor(state[None], dtype=torch.float32)}
    with torch.no_grad():
        raw = model.predict_action(batch)[0].numpy().astype(np.float64)   # [4, 8]
    a = stats.action
    out = raw[:, :7].copy()
    out[:, :6] = out[:, :6] * (a.std[:6] + 1e-8) + a.mean[:6]        # gripper (mask False) not normalised
    out[:, 6] = np.where(out[:, 6] >= 0, 1.0, -1.0)
    return out


def test_quat2axisangle_matches_the_rotation():
    obs, expected = sim_obs()
    np.testing.assert_allclose(quat2axisangle(obs["robot0_eef_quat"]), expected, atol=1e-12)
    np.testing.assert_array_equal(quat2axisangle(np.array([0, 0, 0, 1.0])), np.zeros(3))


def test_actions_equal_the_model_run_through_the_transforms_by_hand(work_dir, tok_dir):
    engine = load_engine(work_dir)
    info = engine.info()
    assert info.checkpoint == "checkpoint_step_3.pt" and info.chunk_length == 4 and info.action_dim == 7
    assert info.gripper_convention == "libero"
    obs, aa = sim_obs()
    got = fx.infer(engine, obs)[0]
    assert got.shape == (4, 7) and got.dtype == np.float32
    np.testing.assert_allclose(got, by_hand(work_dir, obs, aa, tok_dir), rtol=1e-4, atol=1e-5)
    assert set(np.unique(got[:, 6])) <= {-1.0, 1.0}


def test_sim_and_openpi_keys_give_the_same_actions_and_batching_does_not_change_them(work_dir):
    engine = load_engine(work_dir)
    obs, aa = sim_obs()
    openpi = {"observation/image": np.ascontiguousarray(obs["agentview_image"][::-1, ::-1]),
              "observation/wrist_image": np.ascontiguousarray(obs["robot0_eye_in_hand_image"][::-1, ::-1]),
              "observation/state": np.concatenate([obs["robot0_eef_pos"], aa, obs["robot0_gripper_qpos"]]),
              "prompt": obs["prompt"]}
    other, _ = sim_obs(seed=9, prompt="open the top drawer and put the bowl inside")
    a, b, c = fx.infer(engine, obs, openpi, other)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(a, c)
    np.testing.assert_allclose(fx.infer(engine, obs)[0], a, atol=1e-5)


def test_a_batch_is_denormalised_in_one_call_exactly_as_chunk_by_chunk(work_dir):
    """The engine denormalises a batch's chunks in one call (the model's thread is every request's
    wait); each row is bit for bit what a call on that chunk alone gives, in both gripper conventions."""
    engine = load_engine(work_dir)
    denorm = engine.denormalize
    raw = np.random.default_rng(3).normal(0, 1.5, (5, engine.chunk_length, engine.model_action_dim)).astype(np.float32)
    for convention in ("libero", "openvla"):
        denorm.convention = convention
        together = denorm(raw)
        assert together.shape == (5, engine.chunk_length, 7) and together.dtype == np.float32
        np.testing.assert_array_equal(together, np.stack([denorm(chunk) for chunk in raw]))


def test_actions_change_with_dataset_statistics(tmp_path, tok_dir):
    root, _ = fx.make_work_dir(tmp_path / "run", tok_dir)
    obs, _ = sim_obs()
    before = fx.infer(load_engine(root), obs)[0]
    stats = fx.random_statistics(seed=42)
    save_statistics(root / "dataset_statistics.json", fx.STAT_NAME, stats)
    engine = load_engine(root)
    after = fx.infer(engine, obs)[0]
    assert not np.allclose(before[:, :6], after[:, :6])
    # quantile statistics in [0, 1] for the gripper switch the convention to OpenVLA's (invert)
    stats = fx.random_statistics(seed=42, gripper_min=0.0)
    save_statistics(root / "dataset_statistics.json", fx.STAT_NAME, stats)
    flipped = load_engine(root)
    assert flipped.info().gripper_convention == "openvla"
    raw = flipped.predict(flipped.collate([flipped.prepare(obs)]))[0, :, 6]
    np.testing.assert_array_equal(fx.infer(flipped, obs)[0][:, 6], np.where(2 * raw - 1 >= 0, -1.0, 1.0))


def test_model_version_follows_statistics(tmp_path, tok_dir):
    root, _ = fx.make_work_dir(tmp_path / "run", tok_dir)
    v1 = load_engine(root).info().model_version
    assert load_engine(root).info().model_version == v1
    save_statistics(root / "dataset_statistics.json", fx.STAT_NAME, fx.random_statistics(seed=5))
    assert load_engine(root).info().model_version != v1


@pytest.mark.parametrize("variant", ["safetensors", "lora"])
def test_safetensors_and_lora_checkpoints(tmp_path, tok_dir, variant):
    root, model = fx.make_work_dir(tmp_path / "run", tok_dir, fmt="safetensors" if variant == "safetensors" else "pt",
                                   lora=variant == "lora")
    engine = load_engine(root)
    from vla.models.lora import has_lora

    assert not has_lora(engine.model)      # adapters merged into the base weights
    obs, _ = sim_obs()
    sample = engine.prepare(obs)
    with torch.no_grad():
        expected = model.predict_action(engine.collate([sample]))[0].numpy()   # the unmerged trained model
    np.testing.assert_allclose(engine.predict(engine.collate([sample]))[0], expected, atol=1e-5)


def test_bad_work_dirs_name_the_problem(tmp_path, tok_dir):
    with pytest.raises(EngineError, match="config.json: missing"):
        load_engine(tmp_path)
    root, _ = fx.make_work_dir(tmp_path / "run", tok_dir)
    with pytest.raises(EngineError, match="nope.pt"):
        load_engine(root, checkpoint="nope.pt")
    torch.save({"img.weight": torch.zeros(3, 3)}, root / "checkpoint_step_9.pt")
    with pytest.raises(Exception, match="shape|missing"):
        load_engine(root, checkpoint="checkpoint_step_9.pt")


@pytest.fixture(scope="module")
def engine_server(work_dir):
    from policy_server.batcher import BatcherConfig

    server = start_server(load_engine(work_dir), batcher=BatcherConfig(max_batch_size=4, max_queue_delay_ms=5))
    yield server
    server.stop()


def test_three_transports_return_the_same_actions(engine_server, work_dir, tok_dir):
    obs, aa = sim_obs()
    expected = by_hand(work_dir, obs, aa, tok_dir)
    for transport in TRANSPORTS:
        with client(engine_server, transport) as c:
            info = c.server_info()
            assert info.model == "ServerTestModel" and info.checkpoint == "checkpoint_step_3.pt"
            np.testing.assert_allclose(c.infer(obs)["actions"], expected, rtol=1e-4, atol=1e-5)


def test_engine_errors_over_the_wire(engine_server):
    obs = example_observation(16, 16)
    with client(engine_server, "grpc") as c:
        with pytest.raises(PolicyError) as err:
            c.infer(dict(obs, robot0_eef_quat=np.zeros(3)))
        assert err.value.code is ErrorCode.INVALID_ARGUMENT and "robot0_eef_quat" in err.value.message
        assert c.infer(obs)["actions"].shape == (4, 7)


def test_a_checkpoint_that_does_not_load_strictly_is_refused(tmp_path, tok_dir):
    """A work dir whose checkpoint lacks a tensor (or has one the model does not) is refused, naming it."""
    from vla import checkpoint as ckpt
    from vla.models.loading import CheckpointMismatchError

    root, model = fx.make_work_dir(tmp_path / "run", tok_dir)
    sd = model.state_dict()
    missing = sorted(sd)[0]
    ckpt.save_weights(root, "checkpoint_step_3.pt", {k: v for k, v in sd.items() if k != missing})
    with pytest.raises(CheckpointMismatchError, match=f"missing 1: {missing}"):
        load_engine(root)
    ckpt.save_weights(root, "checkpoint_step_3.pt", {**sd, "extra.weight": torch.zeros(2)})
    with pytest.raises(CheckpointMismatchError, match="unexpected 1: extra.weight"):
        load_engine(root)


def test_run_info_gives_the_training_facts_and_old_work_dirs_still_load(tmp_path, tok_dir):
    from vla.run_info import PromptSettings, RunInfo, write_run_info

    root, _ = fx.make_work_dir(tmp_path / "run", tok_dir)   # written without run_info.json, as before it existed
    old = load_engine(root)
    assert old.info().statistic_name == fx.STAT_NAME
    assert next(t for t in old.transforms if hasattr(t, "encode")).max_len == fx.MAX_LEN   # the training max_len
    # A second statistics entry and a config without the facts: only run_info.json can tell.
    save_statistics(root / "dataset_statistics.json", "other", fx.random_statistics(seed=3))
    cfg = json.loads((root / "config.json").read_text())
    cfg["train_dataloader"] = {}
    (root / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngineError, match="cannot tell which statistics to use"):
        load_engine(root)
    write_run_info(root, RunInfo("other", PromptSettings("ProcessPrompts", max_len=9, tokenizer_path=str(tok_dir))))
    engine = load_engine(root)
    assert engine.info().statistic_name == "other"
    assert next(t for t in engine.transforms if hasattr(t, "encode")).max_len == 9
    assert engine.prepare(sim_obs()[0])["lang_tokens"].shape == (9,)


def test_a_denormaliser_that_breaks_the_batch_contract_is_named(work_dir):
    from policy_server.engine import EngineError

    engine = load_engine(work_dir)
    obs, _ = sim_obs()
    sample = engine.prepare(obs)
    real = engine.denormalize
    engine.denormalize = lambda actions: real(actions[0])   # per chunk: the batch axis is lost
    with pytest.raises(EngineError, match=rf"gave shape \({engine.chunk_length}, 7\) for a batch of 1"):
        engine.infer_batch([sample])
