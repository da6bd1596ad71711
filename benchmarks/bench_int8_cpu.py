"""ONNX Runtime's dynamic INT8 forms against fp32, on CPUs with and without VNNI (issue 11).

    python benchmarks/bench_int8_cpu.py prepare     # fixtures, fp32 exports, one INT8 graph per form
    python benchmarks/bench_int8_cpu.py score       # the gate's measure, on this CPU
    qemu-x86_64 -cpu EPYC-Rome .venv/bin/python benchmarks/bench_int8_cpu.py score   # on an AVX2-only CPU
    python benchmarks/bench_int8_cpu.py speed       # single-thread pairs/s on mini, fp32 and each form

Forms: u8s8 (what `rerankd export` did before issue 11), u8s8 with 7-bit weights (`reduce_range`, what it
does now), u8u8. `score` runs only ONNX Runtime and numpy, so it is quick enough under emulation: QEMU's
user-mode emulator (Debian's qemu-user) offers no AVX-512, so ONNX Runtime and torch take their AVX2 paths.
Speed under emulation means nothing; `speed` is for real CPUs. It runs one thread and keeps each form's best
of interleaved rounds, so a busy machine costs rounds rather than skewing one form. Writes
benchmarks/results/int8-cpu-<kind>-<command>.json (kind: the kernels torch picked, e.g. avx512 or avx2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / ".models" / "int8-cpu"
FIXTURES = (("tiny", 0), ("tiny", 1), ("tiny", 2), ("mini", 0), ("mini", 1))
OPTIMIZE = (0, 1)
# name: (weight type, reduce_range)
FORMS = {"u8s8": ("QInt8", False), "u8s8 7-bit weights": ("QInt8", True), "u8u8": ("QUInt8", False)}


def _graph(fixture: Path, form: str, optimize: int) -> Path:
    return fixture / f"{form.replace(' ', '-')}-o{optimize}.onnx"


def prepare() -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from rerankd import Reranker, Settings
    from rerankd.engine.batching import collate
    from rerankd.export import export_onnx
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
        for optimize in OPTIMIZE:
            fp32 = fixture / f"fp32-o{optimize}"
            if not (fp32 / "model.onnx").exists():
                export_onnx(Settings(model=str(fixture / "model")), fp32, optimize=optimize)
            for form, (weight, reduce_range) in FORMS.items():
                quantize_dynamic(fp32 / "model.onnx", _graph(fixture, form, optimize),
                                 weight_type=getattr(QuantType, weight), per_channel=True, reduce_range=reduce_range,
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        print(f"prepared {fixture.relative_to(HERE.parent)}", flush=True)


def _session(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def score() -> list[dict]:
    from rerankd.model.quality import compare

    rows = []
    for shape, seed in FIXTURES:
        fixture = WORK / f"{shape}-{seed}"
        data = dict(np.load(fixture / "gate-pairs.npz"))
        fp32 = data.pop("fp32_logits")
        for optimize in OPTIMIZE:
            for form in FORMS:
                session = _session(_graph(fixture, form, optimize))
                feed = {i.name: data[i.name] for i in session.get_inputs()}
                report = compare(fp32, np.asarray(session.run(["logits"], feed)[0]).reshape(-1))
                rows.append({"fixture": f"{shape} seed {seed}", "optimize": optimize, "form": form,
                             "spearman": round(report.spearman, 4),
                             "max_abs_logit_diff": round(report.max_abs_logit_diff, 3)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def speed(rounds: int) -> list[dict]:
    from workload import QUERY, mixed_documents

    from rerankd import Reranker
    from rerankd.engine.batching import collate

    fixture = WORK / "mini-0"
    encoder = Reranker(str(fixture / "model"), device="cpu").encoder
    pairs = [(QUERY, d) for d in mixed_documents(16, seed=1)]
    batch = collate(encoder.encode_pairs(pairs), encoder.pad_id, encoder.with_token_types)
    graphs = {"fp32": fixture / "fp32-o0" / "model.onnx"} | {form: _graph(fixture, form, 0) for form in FORMS}
    runs = {}
    for name, path in graphs.items():
        session = _session(path)
        feed = {i.name: batch[i.name] for i in session.get_inputs()}
        runs[name] = (session, feed)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (session, feed) in runs.items():
            started = time.perf_counter()
            session.run(["logits"], feed)
            seconds[name].append(time.perf_counter() - started)
    rows = [{"form": name, "best_pairs_per_s": round(len(pairs) / min(s), 2),
             "median_pairs_per_s": round(len(pairs) / statistics.median(s), 2)} for name, s in seconds.items()]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare", "score", "speed"])
    parser.add_argument("--rounds", type=int, default=12, help="speed: interleaved rounds per form")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare()
        return
    import torch

    from rerankd.model.quality import cpu_features

    kind = torch.backends.cpu.get_cpu_capability().lower()
    rows = score() if args.command == "score" else speed(args.rounds)
    command = f"python benchmarks/bench_int8_cpu.py {args.command}" + (
        f" --rounds {args.rounds}" if args.command == "speed" else "")
    # Under user-mode emulation /proc/cpuinfo is the host's; torch's kernel choice follows the emulated CPU.
    result = {"command": command, "torch_kernels": kind, "cpuinfo_flags": cpu_features(), "rows": rows}
    out = HERE / "results" / f"int8-cpu-{kind}-{args.command}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
