"""HTTP load benchmark: `rerankd serve` vs. a plain FastAPI reranking app, same model, same machine.

Each request is 1 query + 32 mixed-length documents (benchmarks/workload.py:
20% of 20-60 words, 60% of 80-200, 20% of 250-450), every request its own
slice of a seeded document stream (no document repeats, so a score cache
can't help). C clients run a closed loop (each sends its
next request when the previous one is answered) until a fixed number of
requests is done; a few warm-up requests per server come first and are not
counted. The load generator runs in its own process (asyncio + httpx via rerankd.bench, no model),
so the servers get the CPU. The servers run one after the other, never together:

- baseline: benchmarks/baseline_app.py under uvicorn defaults (sync handler, pad to
  the request's longest pair, one model pass per request);
- rerankd:  python -m rerankd.cli.main serve --model DIR --port P (all defaults).

    python benchmarks/bench_server.py --shape mini --clients 8 --requests 128

Prints a Markdown table and writes benchmarks/results/server-<shape>-c<clients>.json
(or --out). It also measures this CPU's fp32 matmul peak and reports what
fraction of it rerankd's model work reaches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rerankd.bench import Outcome

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOCS_PER_REQUEST = 32
GATE_RATIO = 2.2
# Default request counts per shape, sized so the whole run (both servers) stays under 15 minutes on the
# 2-vCPU reference machine: mini at C=8 took about 3.4 s per baseline request and 1.6 s per rerankd request,
# so 128 requests come to about 11 minutes; base is about 8x the work per request.
DEFAULT_REQUESTS = {"tiny": 128, "mini": 128, "base": 8}
DEFAULT_WARMUP = {"tiny": 4, "mini": 4, "base": 2}
CPU_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
             "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "neon", "asimd", "sve")


# --------------------------------------------------------------------------- load generator (own process)

async def _closed_loop(url: str, bodies: list[bytes], clients: int, timeout: float) -> dict:
    """Send every body with `clients` concurrent closed-loop clients; per-request latency and outcome."""
    from rerankd.bench import closed_loop

    phase = await closed_loop(url, bodies, clients, timeout=timeout)
    return {"wall_seconds": phase.wall_seconds, "outcomes": [_outcome_record(o) for o in phase.outcomes]}


def _outcome_record(o: Outcome) -> dict:
    """This benchmark's record of one request: anything but 200 with all 32 results is an error."""
    record: dict = {"sent": o.sent, "latency": o.latency, "status": o.status}
    if o.status is None:
        record["error"] = o.error
    elif o.status != 200:
        record["error"] = f"HTTP {o.status}: {o.error}"
    elif o.results != DOCS_PER_REQUEST:
        record["error"] = f"HTTP 200 but not {DOCS_PER_REQUEST} results: {o.error or o.results}"
    elif o.tokens is not None:
        record["tokens"] = o.tokens
    return record


async def _scrape(url: str | None) -> str | None:
    if not url:
        return None
    from rerankd.bench import scrape

    return await scrape(url)


def loadgen_main(spec_path: str, out_path: str) -> None:
    """Warm-up, then the measured closed loop; /metrics is scraped around the measured phase."""
    spec = json.loads(Path(spec_path).read_text())
    lines = Path(spec["bodies"]).read_bytes().splitlines()
    warmup, measured = lines[: spec["warmup"]], lines[spec["warmup"] :]

    async def run() -> dict:
        result: dict = {}
        if warmup:
            result["warmup"] = await _closed_loop(spec["url"], warmup, min(spec["clients"], len(warmup)),
                                                  spec["timeout"])
        result["metrics_before"] = await _scrape(spec.get("metrics_url"))
        # A fresh client (fresh connections) for the measured phase.
        result["measured"] = await _closed_loop(spec["url"], measured, spec["clients"], spec["timeout"])
        result["metrics_after"] = await _scrape(spec.get("metrics_url"))
        return result

    Path(out_path).write_text(json.dumps(asyncio.run(run())))


# --------------------------------------------------------------------------- servers

class Servers:
    """Every child process started here; all are stopped on exit, however the benchmark ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
        log = self.log_dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        self.procs.append(proc)
        return proc, log

    def stop(self, proc: subprocess.Popen, timeout: float = 45) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.procs):
            self.stop(proc, timeout=10)


def _die_with_parent() -> None:
    """Linux: the child is killed if the benchmark dies without cleaning up (e.g. by SIGKILL)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, log: Path, deadline_s: float) -> float:
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < deadline_s:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode} before {url} answered; log:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return time.perf_counter() - started
        time.sleep(0.25)
    raise SystemExit(f"{url} did not answer 200 within {deadline_s:g} s; log:\n{_tail(log)}")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run_load(servers: Servers, spec: dict, work: Path, name: str) -> dict:
    spec_path, out_path = work / f"{name}-spec.json", work / f"{name}-out.json"
    spec_path.write_text(json.dumps(spec))
    proc, log = servers.start(f"{name}-loadgen", [sys.executable, str(Path(__file__).resolve()), "--loadgen",
                                                  str(spec_path), str(out_path)], dict(os.environ))
    proc.wait()
    servers.procs.remove(proc)
    if proc.returncode != 0:
        raise SystemExit(f"load generator failed (exit {proc.returncode}):\n{_tail(log)}")
    return json.loads(out_path.read_text())


def bench_server(servers: Servers, name: str, cmd: list[str], env: dict[str, str], port: int, ready_path: str,
                 rerank_path: str, bodies_path: Path, args: argparse.Namespace, work: Path) -> dict:
    base = f"http://127.0.0.1:{port}"
    print(f"[{name}] starting: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    proc, log = servers.start(name, cmd, env)
    try:
        ready_s = _wait_for(base + ready_path, proc, log, deadline_s=600)
        server_info = None
        if name == "rerankd":
            import httpx

            server_info = httpx.get(base + "/info", timeout=10).json()
        print(f"[{name}] ready after {ready_s:.1f} s; {args.warmup} warm-up + {args.requests} requests, "
              f"{args.clients} clients", file=sys.stderr, flush=True)
        spec = {
            "url": base + rerank_path,
            "metrics_url": base + "/metrics" if name == "rerankd" else None,
            "bodies": str(bodies_path),
            "warmup": args.warmup,
            "clients": args.clients,
            "timeout": args.timeout,
        }
        started = time.perf_counter()
        raw = _run_load(servers, spec, work, name)
        print(f"[{name}] done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        if proc.poll() is not None:
            raise SystemExit(f"{name} server died during the run; log:\n{_tail(log)}")
    finally:
        servers.stop(proc)
    raw["ready_seconds"] = ready_s
    raw["server_info"] = server_info
    raw["command"] = shlex.join(cmd)
    raw["log_tail"] = _tail(log, 15)
    return raw


# --------------------------------------------------------------------------- figures

def _percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); bench_cache.py imports it from here."""
    from rerankd.bench import percentile

    return percentile(values, q)


def summarize(raw: dict) -> dict:
    measured = raw["measured"]
    outcomes = measured["outcomes"]
    ok = [o for o in outcomes if "error" not in o]
    errors = [o for o in outcomes if "error" in o]
    latencies = [o["latency"] for o in ok]
    wall = measured["wall_seconds"]
    warm = raw.get("warmup")
    return {
        "requests": len(outcomes),
        "ok": len(ok),
        "errors": len(errors),
        "error_samples": sorted({o["error"] for o in errors})[:5],
        "warmup_requests": len(warm["outcomes"]) if warm else 0,
        "warmup_errors": sum("error" in o for o in warm["outcomes"]) if warm else 0,
        "wall_seconds": wall,
        "pairs_per_s": DOCS_PER_REQUEST * len(ok) / wall,
        "requests_per_s": len(ok) / wall,
        "latency_s": {
            "p50": _percentile(latencies, 50),
            "p95": _percentile(latencies, 95),
            "p99": _percentile(latencies, 99),
            "mean": sum(latencies) / len(latencies) if latencies else None,
            "max": max(latencies) if latencies else None,
        },
        "latencies_s": [round(x, 4) for x in latencies],
        "ready_seconds": raw["ready_seconds"],
        "command": raw["command"],
        "server_info": raw.get("server_info"),
    }


def model_costs(model_dir: Path, requests: list[tuple[str, list[str]]]) -> dict:
    """Per-pair token counts (rerankd's own encoder, as the server tokenizes) and the model's FLOP formula terms."""
    from transformers.utils import logging as hf_logging

    from rerankd.engine.encoding import PairEncoder
    from rerankd.model import load_model
    from rerankd.settings import Settings

    hf_logging.disable_progress_bar()

    settings = Settings(model=str(model_dir), device="cpu")
    loaded = load_model(settings)
    encoder = PairEncoder(loaded.tokenizer, *settings.lengths())
    per_request = [[p.num_tokens for p in encoder.encode(q, docs)] for q, docs in requests]
    layer_params = head_params = 0
    for name, param in loaded.model.named_parameters():
        if ".encoder.layer." in name or name.startswith("encoder.layer."):
            layer_params += param.numel()
        elif "embeddings" not in name:
            head_params += param.numel()  # pooler/classifier: applied to the first token only
    config = loaded.config
    return {
        "tokens_per_request": per_request,
        "layer_params": layer_params,
        "head_params": head_params,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
    }


def pair_flops(n: int, costs: dict) -> float:
    return 2 * costs["layer_params"] * n + 2 * costs["head_params"] + 4 * costs["layers"] * costs["hidden"] * n * n


FLOP_FORMULA = ("FLOPs per pair of n real tokens = 2 x P_layers x n + 2 x P_head + 4 x L x h x n^2 "
                "(P_layers: encoder-layer params; P_head: pooler/classifier params, first token only; "
                "4 x L x h x n^2: QK^T and attention x V; padding, softmax, layer norms and GELU not counted)")


def matmul_peak(threads: int, size: int = 2048, repeats: int = 10) -> dict:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size, dtype=torch.float32)
        b = torch.randn(size, size, dtype=torch.float32)
        c = torch.empty(size, size, dtype=torch.float32)
        for _ in range(3):
            torch.matmul(a, b, out=c)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(3):
                torch.matmul(a, b, out=c)
            best = min(best, (time.perf_counter() - started) / 3)
    finally:
        torch.set_num_threads(before)
    return {"size": size, "threads": threads, "best_seconds": best, "flops_per_s": 2 * size**3 / best,
            "method": f"torch.matmul fp32 {size}x{size} @ {size}x{size}, best of {repeats} x 3"}


# --------------------------------------------------------------------------- machine

def machine_info() -> dict:
    import torch

    name, flags = None, set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name is None:
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    memory = None
    with contextlib.suppress(OSError, IndexError):
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":")[1].strip()
    return {
        "cpu": name or platform.processor() or "unknown",
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory": memory,
        "torch_threads": torch.get_num_threads(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("rerankd", "torch", "transformers", "tokenizers", "fastapi", "uvicorn", "starlette", "pydantic",
                 "httpx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


# --------------------------------------------------------------------------- main

def model_dir(shape: str) -> Path:
    from rerankd.testing import make_test_model

    path = HERE / ".models" / shape
    if not (path / "config.json").exists():
        make_test_model(path, shape=shape, seed=0)
    return path


def build_requests(count: int, seed: int) -> list[tuple[str, list[str]]]:
    sys.path.insert(0, str(HERE))
    from workload import QUERY, mixed_documents

    # No document repeats anywhere in the run, so a score cache can't answer any pair from memory.
    need = count * DOCS_PER_REQUEST
    docs = list(dict.fromkeys(mixed_documents(need + need // 10 + 64, seed=seed)))[:need]
    if len(docs) < need:
        raise SystemExit(f"the workload gave only {len(docs)} distinct documents, {need} needed")
    return [(QUERY, docs[i * DOCS_PER_REQUEST : (i + 1) * DOCS_PER_REQUEST]) for i in range(count)]


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--loadgen":
        loadgen_main(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="mini", choices=sorted(DEFAULT_REQUESTS))
    parser.add_argument("--clients", type=int, default=8, help="concurrent closed-loop clients")
    parser.add_argument("--requests", type=int, default=None,
                        help=f"measured requests per server (default per shape: {DEFAULT_REQUESTS})")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"warm-up requests per server, not counted (default per shape: {DEFAULT_WARMUP})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the document stream")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="serve this model directory instead of the --shape fixture (e.g. the MiniLM stand-in "
                        "from make_minilm_standin.py)")
    parser.add_argument("--serve-model", type=Path, default=None,
                        help="directory rerankd serves instead (e.g. an ONNX export of the same model); FLOP counts "
                        "still come from the torch model")
    parser.add_argument("--serve-args", default="",
                        help="extra arguments for `rerankd serve`, e.g. '--dtype int8' (issue 5's backend runs)")
    parser.add_argument("--port-base", type=int, default=None,
                        help="baseline on PORT_BASE, rerankd on PORT_BASE+1 (default: free ports)")
    parser.add_argument("--timeout", type=float, default=600, help="client timeout per request, seconds")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default benchmarks/results/server-<shape>-c<clients>.json)")
    args = parser.parse_args()
    if args.requests is None:
        args.requests = DEFAULT_REQUESTS[args.shape]
    if args.warmup is None:
        args.warmup = DEFAULT_WARMUP[args.shape]
    if args.clients < 1 or args.requests < 1 or args.warmup < 0:
        parser.error("--clients and --requests must be at least 1, --warmup at least 0")
    label = args.model_dir.name if args.model_dir else args.shape
    out_path = args.out or HERE / "results" / f"server-{label}-c{args.clients}.json"
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()), *sys.argv[1:]])
    started_all = time.perf_counter()

    path = args.model_dir.resolve() if args.model_dir else model_dir(args.shape)
    total = args.warmup + args.requests
    requests = build_requests(total, args.seed)
    # requests[:N] are the measured ones, so a seed and --requests N always measure the same N requests whatever
    # --warmup is; the warm-ups are the W requests after them, and are sent first.
    ordered = requests[args.requests :] + requests[: args.requests]
    costs = model_costs(path, requests[: args.requests])
    info = machine_info()

    # Both servers get exactly our defaults: no RERANKD_* setting leaks in from this shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")}
    env.pop("BASELINE_MODEL", None)
    ignored_env = sorted(k for k in os.environ if k.startswith("RERANKD_"))
    results: dict[str, dict] = {}
    raws: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        work = Path(tmp)
        bodies_path = work / "bodies.jsonl"
        bodies_path.write_bytes(b"".join(
            json.dumps({"query": q, "documents": docs, "return_documents": False}).encode() + b"\n"
            for q, docs in ordered
        ))
        servers = Servers(work)
        previous_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            if not args.skip_baseline:
                port = args.port_base if args.port_base else _free_port()
                cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "baseline_app:app",
                       "--host", "127.0.0.1", "--port", str(port)]
                raw = bench_server(servers, "baseline", cmd, {**env, "BASELINE_MODEL": str(path)}, port, "/health",
                                   "/v1/rerank", bodies_path, args, work)
                raws["baseline"], results["baseline"] = raw, summarize(raw)
            port = args.port_base + 1 if args.port_base else _free_port()
            served = (args.serve_model or path).resolve()
            cmd = [sys.executable, "-m", "rerankd.cli.main", "serve", "--model", str(served), "--port", str(port),
                   *shlex.split(args.serve_args)]
            raw = bench_server(servers, "rerankd", cmd, env, port, "/ready", "/v1/rerank", bodies_path, args, work)
            raws["rerankd"], results["rerankd"] = raw, summarize(raw)
        finally:
            servers.stop_all()
            signal.signal(signal.SIGTERM, previous_term)

    # Model work of the measured requests, against the CPU's matmul peak (measured with no server running).
    peak = matmul_peak(info["torch_threads"])
    tokens = costs["tokens_per_request"]
    flops_per_request = [sum(pair_flops(n, costs) for n in req) for req in tokens]
    ours, raw = results["rerankd"], raws["rerankd"]
    outcomes = raw["measured"]["outcomes"]
    ok_idx = [i for i, o in enumerate(outcomes) if "error" not in o]
    ours_flops = sum(flops_per_request[i] for i in ok_idx)
    ours_tokens = sum(sum(tokens[i]) for i in ok_idx)
    served_tokens = [o.get("tokens") for o in outcomes if "error" not in o]
    from rerankd.bench import metric_sums

    before, after = metric_sums(raw.get("metrics_before")), metric_sums(raw.get("metrics_after"))
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    model_seconds = delta.get("rerankd_inference_duration_seconds_sum")
    flops = {
        "formula": FLOP_FORMULA,
        "layer_params": costs["layer_params"],
        "head_params": costs["head_params"],
        "layers": costs["layers"],
        "hidden": costs["hidden"],
        "real_tokens": ours_tokens,
        "tokens_match_server_usage": all(t is not None for t in served_tokens)
        and sum(served_tokens) == ours_tokens,
        "model_flops": ours_flops,
        "peak": peak,
        "achieved_flops_per_s_wall": ours_flops / ours["wall_seconds"],
        "fraction_of_peak_wall": ours_flops / ours["wall_seconds"] / peak["flops_per_s"],
        "model_seconds": model_seconds,
        "model_busy_fraction_of_wall": model_seconds / ours["wall_seconds"] if model_seconds else None,
        "achieved_flops_per_s_model_time": ours_flops / model_seconds if model_seconds else None,
        "fraction_of_peak_model_time": ours_flops / model_seconds / peak["flops_per_s"] if model_seconds else None,
        "batches": delta.get("rerankd_inference_duration_seconds_count"),
        "padded_tokens": delta.get("rerankd_batch_tokens_sum"),
        "tokenize_seconds": delta.get("rerankd_tokenization_duration_seconds_sum"),
        "cache_hits": delta.get("rerankd_cache_hits_total"),
        "cache_misses": delta.get("rerankd_cache_misses_total"),
    }
    ours["flops"] = flops
    base = results.get("baseline")
    comparison = None
    if base:
        base_ok = [i for i, o in enumerate(raws["baseline"]["measured"]["outcomes"]) if "error" not in o]
        base["useful_flops_per_s_wall"] = sum(flops_per_request[i] for i in base_ok) / base["wall_seconds"]
        ratio = ours["pairs_per_s"] / base["pairs_per_s"] if base["pairs_per_s"] else None
        p99, p50 = ours["latency_s"]["p99"], base["latency_s"]["p50"]
        checks = {
            f"throughput ratio >= {GATE_RATIO}": ratio is not None and ratio >= GATE_RATIO,
            "zero errors (both servers, warm-up included)": ours["errors"] + base["errors"] + ours["warmup_errors"]
            + base["warmup_errors"] == 0,
            "rerankd p99 <= baseline p50": p99 is not None and p50 is not None and p99 <= p50,
        }
        comparison = {"pairs_per_s_ratio": ratio, "gate": checks, "gate_holds": all(checks.values())}

    result = {
        "benchmark": "server",
        "shape": args.shape,
        "model_dir": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path),
        "clients": args.clients,
        "requests": args.requests,
        "warmup": args.warmup,
        "seed": args.seed,
        "docs_per_request": DOCS_PER_REQUEST,
        "workload": "1 query + 32 docs per request; docs 20% 20-60 words, 60% 80-200, 20% 250-450 "
        "(benchmarks/workload.py mixed_documents), return_documents=false",
        "servers": results,
        "comparison": comparison,
        "ignored_rerankd_env": ignored_env,
        "machine": info,
        "versions": versions(),
        "command": command,
        "total_seconds": time.perf_counter() - started_all,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result, out_path)


def print_report(result: dict, out_path: Path) -> None:
    info = result["machine"]
    print(f"shape {result['shape']}, {result['clients']} clients, {result['requests']} requests x "
          f"{DOCS_PER_REQUEST} docs per server (+{result['warmup']} warm-up), seed {result['seed']}")
    print(f"cpu {info['cpu']} ({info['usable_cpus']} usable CPUs; {', '.join(info['cpu_flags'])}), "
          f"torch threads {info['torch_threads']}, torch {result['versions']['torch']}")
    print()
    print("| server | ok | errors | wall s | pairs/s | req/s | p50 s | p95 s | p99 s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in result["servers"].items():
        lat = s["latency_s"]
        print(f"| {name} | {s['ok']} | {s['errors']} | {s['wall_seconds']:.1f} | {s['pairs_per_s']:.1f} | "
              f"{s['requests_per_s']:.2f} | {_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat['p99'])} |")
    comparison = result["comparison"]
    if comparison:
        print()
        print(f"rerankd / baseline pairs/s: {_fmt(comparison['pairs_per_s_ratio'])}x")
        for check, holds in comparison["gate"].items():
            print(f"- {check}: {'yes' if holds else 'NO'}")
        print(f"gate holds: {'YES' if comparison['gate_holds'] else 'NO'}")
    for name, s in result["servers"].items():
        if s["errors"] or s["warmup_errors"]:
            print(f"{name} errors: {s['error_samples']}")
    f = result["servers"]["rerankd"]["flops"]
    peak = f["peak"]
    print()
    print(f"Model work ({FLOP_FORMULA}):")
    print(f"- rerankd: {f['model_flops'] / 1e12:.2f} TFLOP over {f['real_tokens']} real tokens "
          f"(server usage agrees: {'yes' if f['tokens_match_server_usage'] else 'NO'}); "
          f"padded tokens in batches: {_fmt(f['padded_tokens'], '.0f')} in {_fmt(f['batches'], '.0f')} batches; "
          f"score-cache hits {_fmt(f['cache_hits'], '.0f')} (every document is distinct, so 0 is expected)")
    print(f"- fp32 matmul peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['method']}, {peak['threads']} threads)")
    print(f"- over wall time: {f['achieved_flops_per_s_wall'] / 1e9:.1f} GFLOP/s = "
          f"{100 * f['fraction_of_peak_wall']:.1f}% of peak")
    if f["model_seconds"]:
        print(f"- over model time only ({f['model_seconds']:.1f} s of rerankd_inference_duration_seconds_sum, "
              f"{100 * f['model_busy_fraction_of_wall']:.0f}% of wall): "
              f"{f['achieved_flops_per_s_model_time'] / 1e9:.1f} GFLOP/s = "
              f"{100 * f['fraction_of_peak_model_time']:.1f}% of peak")
    base = result["servers"].get("baseline")
    if base and base.get("useful_flops_per_s_wall"):
        print(f"- baseline, same useful FLOPs over its wall time: {base['useful_flops_per_s_wall'] / 1e9:.1f} GFLOP/s "
              f"= {100 * base['useful_flops_per_s_wall'] / peak['flops_per_s']:.1f}% of peak")
    if result["ignored_rerankd_env"]:
        print(f"(ignored RERANKD_* variables, servers ran with defaults: {', '.join(result['ignored_rerankd_env'])})")
    shown = out_path.resolve()
    shown = shown.relative_to(Path.cwd()) if shown.is_relative_to(Path.cwd()) else shown
    print(f"(total {result['total_seconds']:.0f} s; wrote {shown}; "
          f"command: {result['command']})")


if __name__ == "__main__":
    main()
