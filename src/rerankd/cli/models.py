"""Commands that fetch or make model directories."""

from __future__ import annotations

from pathlib import Path

import click

from rerankd.cli.options import option, setting_options
from rerankd.errors import ErrorKind, RerankdError
from rerankd.settings import Settings

# Files a torch or ONNX serving host never reads; skipping them keeps images small.
_SKIP_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "flax_model*", "tf_model*", "rust_model*", "coreml/*"]


@click.command()
@click.argument("model")
@option("--revision", default=None, metavar="REV", help="Branch, tag or commit to fetch.")
def download(model: str, revision: str | None) -> None:
    """Fetch hub MODEL into the Hugging Face cache (for container builds and air-gapped hosts).

    The cache is the one transformers uses (HF_HOME / HF_HUB_CACHE); afterwards run with
    HF_HUB_OFFLINE=1 and --model MODEL. Prints the local snapshot directory.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        path = snapshot_download(model, revision=revision, ignore_patterns=_SKIP_PATTERNS)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise RerankdError(ErrorKind.MODEL_LOAD, f"cannot download {model!r}: {exc}") from exc
    click.echo(path)


@click.command("make-test-model")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@option("--shape", type=click.Choice(["tiny", "mini", "base", "m3"]), default="tiny", show_default=True,
        help="tiny (2x32) for tests; mini (6x384), base (12x768), m3 (24x1024) match real rerankers for benchmarks.")
@option("--arch", type=click.Choice(["xlm-roberta", "bert"]), default="xlm-roberta", show_default=True,
        help="xlm-roberta: <s> q </s></s> d </s> like bge-reranker; bert: [CLS] q [SEP] d [SEP] like ms-marco MiniLM.")
@option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights; same seed, same files.")
def make_test_model(directory: Path, shape: str, arch: str, seed: int) -> None:
    """Write a random-weight cross-encoder FIXTURE to DIRECTORY (Hugging Face format).

    It loads exactly like a real model (config, safetensors, a tokenizer trained on
    bundled text) but its scores mean nothing: use it for tests, parity checks and
    speed measurements, never as a reranker.
    """
    from rerankd.testing import make_test_model as build

    path = build(directory, shape=shape, arch=arch, seed=seed)
    click.echo(f"wrote a random-weight {arch} test model ({shape} shape, seed {seed}) to {path}")


@click.command()
@option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
        help="Directory to write the ONNX model, tokenizer and config to.")
@setting_options("model", "revision")
def export(out_dir: Path, settings: Settings) -> None:
    """Export a model to a self-contained ONNX directory for `--backend onnx`.

    The classification head is kept; the export is checked against torch on a fixed set
    of pairs before it is kept.
    """
    from rerankd.model.export import export_onnx

    report = export_onnx(settings, out_dir)
    click.echo(
        f"wrote {report.path} ({report.bytes / 1e6:.1f} MB); max |logit difference| vs torch: "
        f"{report.max_abs_logit_diff:.2e}"
    )
