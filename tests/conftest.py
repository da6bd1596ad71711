"""Shared fixtures: random-weight test models, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerankd import Reranker
from rerankd.testing import make_test_model


@pytest.fixture(scope="session")
def xlmr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("xlmr-tiny"), shape="tiny", arch="xlm-roberta", seed=0)


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_model(tmp_path_factory.mktemp("bert-tiny"), shape="tiny", arch="bert", seed=0)


@pytest.fixture(scope="session")
def reranker(xlmr_dir: Path) -> Reranker:
    return Reranker(str(xlmr_dir), device="cpu")


@pytest.fixture(scope="session")
def bert_reranker(bert_dir: Path) -> Reranker:
    return Reranker(str(bert_dir), device="cpu")


# Pairs that cover English, Chinese, mixed scripts, full-width characters,
# repeated whitespace, an empty document and long documents that need cutting.
LONG_EN = " ".join(f"Sentence {i} talks about bamboo forests, rivers and the mountains of Sichuan." for i in range(80))
LONG_ZH = "大熊猫生活在四川的竹林里，每天花很多时间吃竹子。" * 60
PAIRS = [
    ("What do giant pandas eat?", "The giant panda's diet is over 99% bamboo."),
    ("What do giant pandas eat?", "Panda Express is a fast-food chain."),
    ("大熊猫主要吃什么？", "大熊猫的食物中百分之九十九是竹子。"),
    ("大熊猫主要吃什么？", "熊猫电子是一家中国电子企业。"),
    ("mixed 中文 and English", "ＡＢＣ１２３ full-width   text with   spaces, café naïve"),
    ("empty document", ""),
    ("a long English document", LONG_EN),
    ("一篇很长的中文文档", LONG_ZH),
    ("short", "x"),
]
