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
@option("--shape", type=click.Choice(["tiny", "mini", "base", "m3", "qwen3-0.6b"]), default="tiny", show_default=True,
        help="tiny (2x32) for tests; mini (6x384), base (12x768), m3 (24x1024) match real rerankers for benchmarks. "
             "qwen3/gemma: tiny (2x64), mini (4x256), and qwen3-0.6b (28x1024) for qwen3.")
@option("--arch", type=click.Choice(["xlm-roberta", "bert", "qwen3", "gemma"]), default="xlm-roberta",
        show_default=True,
        help="xlm-roberta: <s> q </s></s> d </s> like bge-reranker; bert: [CLS] q [SEP] d [SEP] like ms-marco MiniLM; "
             "qwen3: a causal LM scored like Qwen3-Reranker; gemma: one scored like bge-reranker-v2-gemma.")
@option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights; same seed, same files.")
@option("--int8-outliers", is_flag=True,
        help="Build a model that INT8 quantisation ruins (to see the INT8 quality gate refuse it).")
@option("--max-positions", type=click.IntRange(16, 8194), default=None,
        help="Position table size (max_position_embeddings), up to bge-reranker-v2-m3's 8194; default: the shape's "
             "(514, m3 8194). Cross-encoder archs only: the qwen3/gemma fixtures have 8192 positions.")
def make_test_model(
    directory: Path, shape: str, arch: str, seed: int, int8_outliers: bool, max_positions: int | None
) -> None:
    """Write a random-weight reranker FIXTURE to DIRECTORY (Hugging Face format).

    It loads exactly like a real model (config, safetensors, a tokenizer trained on
    bundled text) but its scores mean nothing: use it for tests, parity checks and
    speed measurements, never as a reranker.
    """
    from rerankd.testing import make_causal_test_model, make_test_model

    if arch in ("qwen3", "gemma"):
        if int8_outliers or max_positions is not None:
            raise click.UsageError("--int8-outliers and --max-positions apply to the cross-encoder archs only "
                                   "(the qwen3/gemma fixtures have 8192 positions)")
        try:
            path = make_causal_test_model(directory, shape=shape, arch=arch, seed=seed)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
    else:
        path = make_test_model(directory, shape=shape, arch=arch, seed=seed, int8_outliers=int8_outliers,
                               max_positions=max_positions)
    click.echo(f"wrote a random-weight {arch} test model ({shape} shape, seed {seed}) to {path}")


@click.command()
@option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
        help="Directory to write the model, tokenizer and config to.")
@option("--format", "format_", type=click.Choice(["onnx", "openvino"]), default="onnx", show_default=True,
        help="onnx for --backend onnx (ONNX Runtime); openvino for --backend openvino (OpenVINO IR, CPU).")
@option("--optimize", type=click.Choice(["0", "1", "2", "99"]), default="0", show_default=True,
        help="ONNX Runtime graph optimisation: 1 fuses attention, LayerNorm and GELU (portable), 2 adds extended "
             "fusions, 99 adds layouts tied to this machine's CPU; 0 leaves it to load time.")
@option("--quantize", type=click.Choice(["int8"]), default=None,
        help="INT8 weights and activations (about a quarter of the size): dynamic for onnx, calibrated through "
             "NNCF for openvino. Refused when it ranks the reference pairs unlike fp32 (Spearman below the bound) "
             "unless --force is given.")
@option("--force", is_flag=True, help="Keep an INT8 export that fails the quality gate.")
@setting_options("model", "revision")
def export(out_dir: Path, format_: str, optimize: str, quantize: str | None, force: bool, settings: Settings) -> None:
    """Export a model to a self-contained ONNX or OpenVINO directory for `--backend onnx` or `openvino`.

    The classification head is kept. Before the directory is written, an fp32 export is
    checked against torch on fixed pairs (max |logit difference| at most 1e-4) and an INT8
    export must rank fixed reference pairs like the fp32 model.
    """
    from rerankd.export import export_onnx, export_openvino

    if format_ == "openvino":
        if optimize != "0":
            raise RerankdError(ErrorKind.INVALID_INPUT, "--optimize is for --format onnx; OpenVINO fuses at load")
        report = export_openvino(settings, out_dir, quantize=quantize, force=force)
    else:
        report = export_onnx(settings, out_dir, optimize=int(optimize), quantize=quantize, force=force)
    info = report.info
    optimized = f"optimize {info.optimize}, " if info.format == "onnx" else ""
    quality = f"; Spearman vs fp32: {info.spearman:.4f}" if info.spearman is not None else ""
    click.echo(
        f"wrote {report.path} ({info.format} {info.dtype}, {optimized}{report.bytes / 1e6:.1f} MB); "
        f"max |logit difference| vs torch: {info.max_abs_logit_diff:.2e}{quality}"
    )
