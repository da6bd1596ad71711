"""Shared fixtures: random-weight test models, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import RedisServer

from rerankd import Reranker
from rerankd.testing import make_test_model


@pytest.fixture(scope="session")
def xlmr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("xlmr-tiny"), shape="tiny", arch="xlm-roberta", seed=0)


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("bert-tiny"), shape="tiny", arch="bert", seed=0)


@pytest.fixture(scope="session")
def mini_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mini shape (6 x 384): for tests that need a model far slower than its tokenizer on any CPU."""
    return make_test_model(tmp_path_factory.mktemp("xlmr-mini"), shape="mini", arch="xlm-roberta", seed=0)


@pytest.fixture(scope="session")
def reranker(xlmr_dir: Path) -> Reranker:
    return Reranker(str(xlmr_dir), device="cpu")


@pytest.fixture(scope="session")
def bert_reranker(bert_dir: Path) -> Reranker:
    return Reranker(str(bert_dir), device="cpu")


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
