"""rerankd.corpus: the bundled text the fixtures and the INT8 gate read."""

from __future__ import annotations

from rerankd.corpus import corpus_lines


def test_corpus_is_package_data() -> None:
    lines = corpus_lines()
    text = "\n".join(lines)
    assert len(text.encode("utf-8")) > 40_000
    assert "沸点" in text and "ＡＢＣ" in text and "Café" in text


def test_corpus_lines_are_stripped_and_never_blank() -> None:
    assert all(line and line == line.strip() for line in corpus_lines())
