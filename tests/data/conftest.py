"""Fixtures for the data tests: one small synthetic dataset and one tiny tokenizer per session."""
from __future__ import annotations

import pytest

from vla.data.synthetic import write_synthetic_libero_dataset
from vla.data.tiny_tokenizer import build_tiny_tokenizer

LENGTHS = [7, 9, 5, 12, 8]
IMAGE_SIZE = 64


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """5 episodes of different lengths over 3 chunks (chunks_size=2), 2 cameras at 64×64."""
    root = tmp_path_factory.mktemp("synthetic") / "libero"
    return write_synthetic_libero_dataset(root, num_episodes=len(LENGTHS), episode_length=LENGTHS,
                                          image_size=IMAGE_SIZE, chunks_size=2)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")
