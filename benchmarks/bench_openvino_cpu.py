"""OpenVINO fp32 and NNCF INT8 exports against torch fp32, on CPUs with and without VNNI (issue 17).

    python benchmarks/bench_openvino_cpu.py prepare   # fixtures, gate pairs, OpenVINO fp32/INT8 and ONNX INT8 exports
    python benchmarks/bench_openvino_cpu.py score --label vnni   # the gate's measure, on this (VNNI) CPU
    qemu-x86_64 -cpu EPYC-Rome .venv/bin/python benchmarks/bench_openvino_cpu.py score --label avx2   # AVX2 only

`score` runs only OpenVINO, ONNX Runtime and numpy on the batch `prepare` saved (the gate's 36 reference pairs,
with torch fp32's logits), so it is quick enough under QEMU's user-mode emulator, which offers no AVX-512: the
runtimes take their AVX2 paths, as in benchmarks/bench_int8_cpu.py. Speed under emulation means nothing.
Writes benchmarks/results/openvino-cpu-<label>-score.json. The label is given, not detected: QEMU's user-mode
emulator passes the host's /proc/cpuinfo through, while the code runs on the emulated CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / ".models" / "openvino-cpu"
FIXTURES = (("tiny", 0), ("mini", 0), ("mini", 1))
# name: (export format, quantize)
EXPORTS = {"openvino fp32": ("openvino", None), "openvino int8": ("openvino", "int8"), "onnx int8": ("onnx", "int8")}


def prepare() -> None:
    from rerankd import Reranker, Settings
    from rerankd.engine.batching import collate
    from rerankd.export import export_onnx, export_openvino
    from rerankd.model.quality import reference_pairs
    from rerankd.testing import make_test_model

    for shape, seed in FIXTURES:
        fixture = WORK / f"{shape}-{seed}"
        if not (fixture / "model" / "config.json").exists():
            make_test_model(fixture / "model", shape=shape, seed=seed)
        reranker = Reranker(str(fixture / "model"), device="cpu")
        encoder = reranker.encoder
        batch = collate(encoder.encode_pairs(list(reference_pairs())), encoder.pad_id, encoder.with_token_types)
        np.savez(fixture / "gate-pairs.npz", fp32_logits=reranker.scorer.backend.forward(batch), **batch)
        for name, (form, quantize) in EXPORTS.items():
            out = fixture / name.replace(" ", "-")
            if not (out / "config.json").exists():
                export = export_openvino if form == "openvino" else export_onnx
                export(Settings(model=str(fixture / "model")), out, quantize=quantize, force=True)


def _logits(directory: Path, batch: dict[str, np.ndarray]) -> np.ndarray:
    if (directory / "model.onnx").exists():
        import onnxruntime as ort

        session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
        feed = {i.name: batch[i.name] for i in session.get_inputs()}
        return np.asarray(session.run(["logits"], feed)[0]).reshape(-1)
    import openvino as ov

    compiled = ov.Core().compile_model(directory / "openvino_model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    feed = {port.get_any_name(): batch[port.get_any_name()] for port in compiled.inputs}
    return np.asarray(compiled(feed)[0]).reshape(-1)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = [np.argsort(np.argsort(x)).astype(np.float64) for x in (a, b)]  # the gate's logits have no ties
    return float(np.corrcoef(*ranks)[0, 1])


def score(isa: str) -> None:
    rows = []
    for shape, seed in FIXTURES:
        fixture = WORK / f"{shape}-{seed}"
        saved = np.load(fixture / "gate-pairs.npz")
        reference = saved["fp32_logits"]
        batch = {name: saved[name] for name in saved.files if name != "fp32_logits"}
        for name in EXPORTS:
            logits = _logits(fixture / name.replace(" ", "-"), batch)
            rows.append({"fixture": f"{shape}, seed {seed}", "export": name,
                         "spearman": _spearman(reference, logits),
                         "max_abs_logit_diff": float(np.max(np.abs(reference - logits)))})
            print(f"{isa} | {rows[-1]['fixture']} | {name} | {rows[-1]['spearman']:.4f} | "
                  f"{rows[-1]['max_abs_logit_diff']:.2e}", flush=True)
    out = HERE / "results" / f"openvino-cpu-{isa}-score.json"
    out.write_text(json.dumps({"cpu": isa, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare", "score"])
    parser.add_argument("--label", default="vnni", help="score: the CPU's name in the results file")
    args = parser.parse_args()
    prepare() if args.command == "prepare" else score(args.label)
