"""Overload benchmark: does `rerankd serve` degrade gracefully when offered more than it can do?

Phases, all in one run, on the `mini` fixture by default (`tiny` for a smoke run):

1. idle: on the idle server, the latency of a 32-document request (median of 3), a 4-document one (median of 5),
   a 256-document one and a 300-document one; and the time of one batch, the mean of
   rerankd_inference_duration_seconds (sum/count) over the 300-document request, whose batches are full token
   budgets. One 32-document warm-up request comes first and is not counted.
2. capacity: closed loop, 8 clients, 32 mixed-length documents per request (bench_server.py's workload), 4 warm-up
   + 48 measured requests -> capacity in requests/s and pairs/s.
3. open-2x, open-4x: Poisson arrivals at 2x (then 4x) capacity in requests/s, 32-document requests, --duration
   seconds each. Goodput: pairs of the 200 answers over the phase's wall time (first arrival to last answer, so
   the queue worked off after the window counts, and so does the time it took). Checks: goodput >= 90% of capacity
   pairs/s; every refusal is a 429 with an integer Retry-After;
   refusal p99 < 100 ms; no 5xx and no transport errors; served p99 <= max_queue_wait + 2 x idle 32-doc latency.
4. fairness-a: a 300-document request starts; once rerankd_batch_size_count has grown by 2 batches since it was
   sent (so it is in the model, not queued), a 4-document request is sent and timed. 5 trials, new documents each.
   Check: each <= 3 x idle 4-doc latency + one batch.
5. fairness-b: a timed closed loop of 3 clients sending 4-document requests and 1 sending 256-document ones, for
   --mixed-duration seconds; then 2 + 2. Check per size: p95 <= 3 x its idle latency + one batch.
6. storm: a second server that admits everything (--max-queue-wait 3000 --request-timeout 3600
   --max-concurrent-requests 1000). 200 32-document requests at once, each client closing its connection after 1 s
   without reading the answer. Measured: time from the last hang-up until rerankd_queue_pairs reads 0 (polled every
   50 ms), against one batch; the server's 499 count (it saw every hang-up); then one normal 32-document request,
   against the idle 32-doc latency (check: within 1.5x of this server's own, median of 3 just before the storm;
   the ratio to phase 1's is reported too).

After every phase the run waits (bounded) for answers in flight and for rerankd_queue_pairs to read 0. Every
document in the run is distinct (rerankd.bench.DocumentStream, deduplicated), so the score cache can't
answer any pair. Servers run with default flags (plus --serve-args for the main one), never two at once; the load
generator (rerankd.bench) runs in its own process; all traffic is on 127.0.0.1.

    python benchmarks/bench_overload.py                      # mini, 180 s open-loop phases: about 20 minutes
    python benchmarks/bench_overload.py --shape tiny --duration 20 --mixed-duration 20 --out /tmp/overload.json

Prints Markdown tables of figures and checks (progress on stderr) and writes benchmarks/results/overload-<shape>.json
(or --out): the command, machine, versions, server settings, figures, checks and every phase's raw outcomes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_server import (  # noqa: E402 - benchmarks/ is not a package
    Servers,
    _die_with_parent,
    _free_port,
    _tail,
    _wait_for,
    machine_info,
    model_dir,
    versions,
)

from rerankd.bench import (  # noqa: E402
    QUERY,
    DocumentStream,
    PhaseResult,
    RequestBody,
    closed_loop,
    hang_ups,
    make_client,
    metric_sums,
    open_loop,
    parse_samples,
    poisson_schedule,
    post,
    rerank_body,
    scrape,
    summarize,
    timed_closed_loop,
    wait_for_metric,
)

PHASES = ("idle", "capacity", "open-2x", "open-4x", "fairness-a", "fairness-b", "storm")
OPEN_FACTORS = {"open-2x": 2, "open-4x": 4}
SHAPES = ("tiny", "mini")

IDLE_REQUESTS = {32: 3, 4: 5, 256: 1, 300: 1}  # documents -> requests; the median is the idle latency
CAPACITY_CLIENTS, CAPACITY_WARMUP, CAPACITY_REQUESTS, CAPACITY_DOCS = 8, 4, 48, 32
OPEN_DOCS = 32
# At most this many arrivals per open-loop phase: a fast shape (tiny) at 4x capacity would otherwise need tens of
# thousands of bodies. When the cap binds, the arrival window is shortened and the report says so.
OPEN_MAX_REQUESTS = 4000
FAIRNESS_A_TRIALS, FAIRNESS_A_BIG, FAIRNESS_A_SMALL, FAIRNESS_A_BATCHES = 5, 300, 4, 2
FAIRNESS_A_TRIGGER_TIMEOUT_S = 120  # most seconds to wait for the big request's batches to start
FAIRNESS_B_SMALL, FAIRNESS_B_BIG = 4, 256
FAIRNESS_B_CONFIGS = ((3, 1), (2, 2))  # (small clients, big clients)
STORM_REQUESTS, STORM_DOCS, STORM_HANG_UP_S = 200, 32, 1.0
STORM_FLAGS = ["--max-queue-wait", "3000", "--request-timeout", "3600", "--max-concurrent-requests", "1000"]
RECORDED_MIN_DURATION_S = 180  # open-loop phases shorter than this are smoke runs, never written to results/
SETTLE_TIMEOUT_S = 180  # most seconds to wait for rerankd_queue_pairs to read 0 after a phase
STORM_DRAIN_TIMEOUT_S = 300  # a server that ignores hang-ups works off 6,400 pairs: minutes on mini
POLL_S = 0.05
CLIENT_TIMEOUT_MARGIN_S = 30  # client timeout = the server's request timeout + this, at most:
CLIENT_TIMEOUT_MAX_S = 600  # (the storm server's request timeout is an hour)

# Check limits.
GOODPUT_FRACTION = 0.9
REFUSAL_P99_S = 0.1
FAIRNESS_FACTOR = 3.0
STORM_LATENCY_RATIO = 1.5
# After the last hang-up a server that drops abandoned work finishes at most the batch it is running; the gauge is
# read every POLL_S, so two polls are the measurement's resolution.
STORM_DRAIN_SLACK_S = 2 * POLL_S
CLIENT_LAG_P99_S = 0.05  # above this the load generator itself fell behind, and the phase's latencies include it

QUEUE = "rerankd_queue_pairs"
BATCHES = "rerankd_batch_size_count"
METRICS_OF_INTEREST = (
    "rerankd_inference_duration_seconds_sum", "rerankd_inference_duration_seconds_count",
    "rerankd_batch_size_sum", "rerankd_batch_size_count", "rerankd_batch_tokens_sum",
    "rerankd_queue_duration_seconds_sum", "rerankd_queue_duration_seconds_count",
    "rerankd_tokenization_duration_seconds_sum", "rerankd_cache_hits_total",
)


def progress(message: str) -> None:
    print(f"[overload {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- load generator (own process)

class LoadGen:
    """Runs the phases against one server and keeps their raw results."""

    def __init__(self, spec: dict[str, Any], out_path: Path) -> None:
        self.spec = spec
        self.out_path = out_path
        self.base = spec["base_url"]
        self.url = self.base + "/v1/rerank"
        self.metrics_url = self.base + "/metrics"
        self.timeout = spec["client_timeout"]
        # The storm server gets its own document stream: no document repeats across the two servers either.
        self.docs = DocumentStream(spec["seed"] + (7919 if spec.get("storm") else 0))
        self.raw: dict[str, Any] = {}

    def body(self, documents: int) -> RequestBody:
        return rerank_body(QUERY, self.docs.take(documents))

    def save(self) -> None:
        # Written after every phase, so a run that dies keeps what it measured.
        self.out_path.write_text(json.dumps(self.raw))

    async def snapshot(self) -> dict[str, Any]:
        """The metrics this benchmark reads, summed over labels, plus /v1/rerank requests by status."""
        text = await scrape(self.metrics_url)
        sums = metric_sums(text)
        by_status: dict[str, float] = {}
        for s in parse_samples(text):
            if s.name == "rerankd_requests_total" and s.labels.get("route") == "/v1/rerank":
                by_status[s.labels.get("status", "?")] = by_status.get(s.labels.get("status", "?"), 0.0) + s.value
        return {"time": time.perf_counter(), "queue_pairs": sums.get(QUEUE, 0.0),
                **{k: sums.get(k, 0.0) for k in METRICS_OF_INTEREST}, "rerank_requests_by_status": by_status}

    async def settle(self) -> dict[str, Any]:
        """Wait (bounded) until the server has nothing queued or running."""
        waited = await wait_for_metric(self.metrics_url, QUEUE, lambda v: v == 0, timeout=SETTLE_TIMEOUT_S,
                                       interval=POLL_S)
        if not waited.met:
            progress(f"WARNING: {QUEUE} still reads {waited.value} after {SETTLE_TIMEOUT_S} s")
        return {"drained": waited.met, "seconds": waited.seconds, "queue_pairs": waited.value}

    async def sequential(self, documents: int, count: int) -> dict[str, Any]:
        phase = await closed_loop(self.url, [self.body(documents) for _ in range(count)], 1, timeout=self.timeout)
        return phase.to_dict()

    # ----------------------------------------------------------------- phases

    async def idle(self) -> dict[str, Any]:
        out: dict[str, Any] = {"warmup": await self.sequential(32, 1)}
        for documents, count in IDLE_REQUESTS.items():
            if documents == 300:
                out["metrics_before_300"] = await self.snapshot()
            out[f"docs_{documents}"] = await self.sequential(documents, count)
            if documents == 300:
                out["metrics_after_300"] = await self.snapshot()
            answers = [f"{o.get('latency', float('nan')):.3f} s ({o.get('status')})"
                       for o in out[f"docs_{documents}"]["outcomes"]]
            progress(f"idle: {count} x {documents} docs: {', '.join(answers)}")
        return out

    async def capacity(self) -> dict[str, Any]:
        warm = [self.body(CAPACITY_DOCS) for _ in range(CAPACITY_WARMUP)]
        bodies = [self.body(CAPACITY_DOCS) for _ in range(CAPACITY_REQUESTS)]
        out: dict[str, Any] = {"warmup": (await closed_loop(self.url, warm, CAPACITY_CLIENTS,
                                                            timeout=self.timeout)).to_dict()}
        out["metrics_before"] = await self.snapshot()
        phase = await closed_loop(self.url, bodies, CAPACITY_CLIENTS, timeout=self.timeout)
        out["metrics_after"] = await self.snapshot()
        out["measured"] = phase.to_dict()
        ok = sum(o.ok for o in phase.outcomes)
        out["requests_per_s"] = ok / phase.wall_seconds
        progress(f"capacity: {ok}/{len(bodies)} ok in {phase.wall_seconds:.1f} s = {out['requests_per_s']:.3f} req/s")
        return out

    async def open_loop(self, name: str, capacity_rps: float) -> dict[str, Any]:
        factor = OPEN_FACTORS[name]
        if capacity_rps <= 0:
            raise RuntimeError("capacity measured 0 requests/s: no rate to offer")
        rate = factor * capacity_rps
        duration = self.spec["duration"]
        capped = rate * duration > OPEN_MAX_REQUESTS
        if capped:
            duration = OPEN_MAX_REQUESTS / rate
            progress(f"{name}: {rate:.1f} req/s for {self.spec['duration']} s would pass {OPEN_MAX_REQUESTS} requests; "
                     f"arrival window cut to {duration:.1f} s")
        times = poisson_schedule(rate, duration, seed=self.spec["seed"] * 100 + factor)
        progress(f"{name}: {len(times)} arrivals at {rate:.3f} req/s over {duration:.0f} s; building bodies")
        bodies = [self.body(OPEN_DOCS) for _ in times]
        before = await self.snapshot()
        progress(f"{name}: sending")
        phase = await open_loop(self.url, times, bodies, timeout=self.timeout, duration=duration,
                                prime_url=self.base + "/health")
        after = await self.snapshot()
        progress(f"{name}: done in {phase.wall_seconds:.1f} s")
        return {"factor": factor, "rate": rate, "duration": duration, "duration_capped": capped,
                "metrics_before": before, "metrics_after": after, "phase": phase.to_dict()}

    async def fairness_a(self) -> dict[str, Any]:
        bound = FAIRNESS_A_TRIGGER_TIMEOUT_S
        trials = []
        for trial in range(FAIRNESS_A_TRIALS):
            big, small = self.body(FAIRNESS_A_BIG), self.body(FAIRNESS_A_SMALL)
            batches_before = (await self.snapshot())[BATCHES]
            async with make_client(self.timeout, connections=None) as http:
                started = time.perf_counter()
                big_task = asyncio.create_task(post(http, self.url, big, index=0, phase_start=started))
                trigger = asyncio.create_task(wait_for_metric(
                    self.metrics_url, BATCHES, lambda v, b=batches_before: v >= b + FAIRNESS_A_BATCHES,
                    timeout=bound, interval=POLL_S))
                await asyncio.wait({big_task, trigger}, return_when=asyncio.FIRST_COMPLETED)
                record: dict[str, Any] = {"trial": trial}
                if big_task.done() or not trigger.done() or not trigger.result().met:
                    trigger.cancel()
                    # The big request ended (or the batches never came): there was nothing to cut in front of.
                    record["valid"] = False
                    record["big"] = (await big_task).to_dict()
                    record["reason"] = "the 300-document request finished before the trigger" if big_task.done() \
                        else f"{FAIRNESS_A_BATCHES} batches did not run within {bound} s"
                else:
                    record["valid"] = True
                    record["trigger_after_s"] = time.perf_counter() - started
                    small_outcome = await post(http, self.url, small, index=1, phase_start=started)
                    big_outcome = await big_task
                    record["small"] = small_outcome.to_dict()
                    record["big"] = big_outcome.to_dict()
                    # Served, and before the big one: a refusal comes back first too, but cuts in front of nothing.
                    record["small_finished_first"] = (
                        small_outcome.ok and small_outcome.finished is not None and big_outcome.finished is not None
                        and small_outcome.finished < big_outcome.finished)
            record["settle"] = await self.settle()
            trials.append(record)
            small = record.get("small", {})
            progress(f"fairness-a trial {trial + 1}/{FAIRNESS_A_TRIALS}: "
                     + (f"4 docs sent after {record['trigger_after_s']:.2f} s: {small.get('latency', 0):.3f} s "
                        f"({small.get('status') or small.get('exception')})"
                        if record["valid"] else f"invalid ({record['reason']})"))
        return {"trigger": f"rerankd_batch_size_count grew by >= {FAIRNESS_A_BATCHES} since the big request was sent",
                "trials": trials}

    async def fairness_b(self) -> dict[str, Any]:
        def source(documents: int) -> Iterator[RequestBody]:
            while True:
                yield self.body(documents)

        configs = []
        for n_small, n_big in FAIRNESS_B_CONFIGS:
            progress(f"fairness-b: {n_small} x {FAIRNESS_B_SMALL} docs + {n_big} x {FAIRNESS_B_BIG} docs clients "
                     f"for {self.spec['mixed_duration']} s")
            sources = [source(FAIRNESS_B_SMALL) for _ in range(n_small)] + [source(FAIRNESS_B_BIG) for _ in range(n_big)]
            before = await self.snapshot()
            phase = await timed_closed_loop(self.url, sources, self.spec["mixed_duration"], timeout=self.timeout)
            after = await self.snapshot()
            configs.append({"small_clients": n_small, "big_clients": n_big, "metrics_before": before,
                            "metrics_after": after, "phase": phase.to_dict(), "settle": await self.settle()})
        return {"configs": configs}

    async def storm(self) -> dict[str, Any]:
        out: dict[str, Any] = {"warmup": await self.sequential(STORM_DOCS, 1),
                               "baseline_32": await self.sequential(STORM_DOCS, 3)}
        bodies = [self.body(STORM_DOCS) for _ in range(STORM_REQUESTS)]
        out["metrics_before"] = await self.snapshot()
        progress(f"storm: {STORM_REQUESTS} x {STORM_DOCS} docs at once, hanging up after {STORM_HANG_UP_S:g} s")
        phase = await hang_ups(self.url, bodies, after=STORM_HANG_UP_S)
        assert phase.started_at is not None
        hung_up = [o.hung_up for o in phase.outcomes if o.hung_up is not None]
        last_hang_up = phase.started_at + max(hung_up) if hung_up else time.perf_counter()
        waited = await wait_for_metric(self.metrics_url, QUEUE, lambda v: v == 0, timeout=STORM_DRAIN_TIMEOUT_S,
                                       interval=POLL_S)
        drained_at = time.perf_counter() if waited.met else None
        out["metrics_after"] = await self.snapshot()
        out["hang_ups"] = phase.to_dict()
        out["drain"] = {"drained": waited.met, "polls": waited.polls, "queue_pairs_last": waited.value,
                        "seconds_after_last_hang_up": drained_at - last_hang_up if drained_at else None,
                        "timeout_s": STORM_DRAIN_TIMEOUT_S}
        progress("storm: queue " + (f"drained {out['drain']['seconds_after_last_hang_up']:.3f} s after the last "
                                    "hang-up" if waited.met else f"still {waited.value} after {STORM_DRAIN_TIMEOUT_S} s"))
        out["after"] = await self.sequential(STORM_DOCS, 1)
        return out

    async def run(self) -> None:
        phases = self.spec["phases"]
        for name in phases:
            progress(f"phase {name}")
            try:
                if name == "idle":
                    result = await self.idle()
                elif name == "capacity":
                    result = await self.capacity()
                elif name in OPEN_FACTORS:
                    result = await self.open_loop(name, self.raw.get("capacity", {}).get("requests_per_s", 0.0))
                elif name == "fairness-a":
                    result = await self.fairness_a()
                elif name == "fairness-b":
                    result = await self.fairness_b()
                elif name == "storm":
                    result = await self.storm()
                else:
                    raise ValueError(f"unknown phase {name}")
                if "settle" not in result:
                    result["settle"] = await self.settle()
            except Exception as exc:  # noqa: BLE001 - a failed phase is recorded and the next one still runs
                progress(f"phase {name} FAILED: {type(exc).__name__}: {exc}")
                result = {"failed": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            self.raw[name] = result
            self.save()


def loadgen_main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    asyncio.run(LoadGen(spec, Path(out_path)).run())


# --------------------------------------------------------------------------- servers (this process)

def _run_loadgen(servers: Servers, spec: dict[str, Any], work: Path, name: str) -> dict[str, Any]:
    spec_path, out_path = work / f"{name}-spec.json", work / f"{name}-out.json"
    spec_path.write_text(json.dumps(spec))
    # Progress goes to our stderr; stdout (nothing expected) to a log.
    log = work / f"{name}-loadgen.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--loadgen", str(spec_path),
                                 str(out_path)], cwd=ROOT, stdout=out, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
    servers.procs.append(proc)
    proc.wait()
    servers.procs.remove(proc)
    raw = json.loads(out_path.read_text()) if out_path.exists() else {}
    if proc.returncode != 0:
        progress(f"load generator failed (exit {proc.returncode}); keeping the {len(raw)} phases it finished")
        raw["_loadgen_failed"] = proc.returncode
    return raw


def _flag_value(args: list[str], flag: str) -> str | None:
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def run_server(servers: Servers, name: str, model: Path, serve_args: list[str], env: dict[str, str],
               phases: list[str], spec: dict[str, Any], work: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start one server, run `phases` against it from the load-generator process, stop it."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "rerankd.cli.main", "serve", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), *serve_args]
    progress(f"[{name}] starting: {shlex.join(cmd)}")
    proc, log = servers.start(name, cmd, env)
    try:
        ready_s = _wait_for(f"http://127.0.0.1:{port}/ready", proc, log, deadline_s=600)
        info = httpx.get(f"http://127.0.0.1:{port}/info", timeout=10).json()
        # /info reports the admission limits when the server has them; otherwise the flags given, else defaults.
        max_queue_wait = info.get("max_queue_wait") or float(_flag_value(serve_args, "--max-queue-wait") or 10)
        request_timeout = info.get("request_timeout") or float(_flag_value(serve_args, "--request-timeout") or 120)
        progress(f"[{name}] ready after {ready_s:.1f} s (max_queue_wait {max_queue_wait:g} s, request_timeout "
                 f"{request_timeout:g} s); phases: {', '.join(phases)}")
        spec = {**spec, "base_url": f"http://127.0.0.1:{port}", "phases": phases,
                "client_timeout": min(request_timeout + CLIENT_TIMEOUT_MARGIN_S, CLIENT_TIMEOUT_MAX_S),
                "storm": name == "storm"}
        raw = _run_loadgen(servers, spec, work, name)
        alive = proc.poll() is None
        if not alive:
            progress(f"[{name}] server died during the run; log:\n{_tail(log)}")
    finally:
        servers.stop(proc)
    server = {"command": shlex.join(cmd), "ready_seconds": ready_s, "info": info, "max_queue_wait": max_queue_wait,
              "request_timeout": request_timeout, "alive_at_end": alive, "log_tail": _tail(log, 15)}
    return server, raw


# --------------------------------------------------------------------------- figures and checks

def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    out = {k: after[k] - before[k] for k in METRICS_OF_INTEREST if k in before and k in after}
    statuses = set(before.get("rerank_requests_by_status", {})) | set(after.get("rerank_requests_by_status", {}))
    out["rerank_requests_by_status"] = {
        s: after.get("rerank_requests_by_status", {}).get(s, 0.0) - before.get("rerank_requests_by_status", {}).get(s, 0.0)
        for s in sorted(statuses)}
    wall = after["time"] - before["time"]
    out["seconds"] = wall
    count = out.get("rerankd_inference_duration_seconds_count")
    out["mean_batch_seconds"] = out["rerankd_inference_duration_seconds_sum"] / count if count else None
    out["model_busy_fraction"] = out.get("rerankd_inference_duration_seconds_sum", 0.0) / wall if wall > 0 else None
    return out


def _latencies(phase: dict[str, Any]) -> list[float]:
    return [o["latency"] for o in phase["outcomes"] if o.get("status") == 200 and "latency" in o]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


class Checks:
    """Pass/fail lines: phase, what is checked, the measured value, the limit."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, phase: str, check: str, value: Any, limit: Any, passed: bool | None, note: str = "") -> None:
        # passed None: the check could not be evaluated (a figure it needs is missing).
        self.items.append({"phase": phase, "check": check, "value": value, "limit": limit, "pass": passed,
                           "note": note})


def figures(raw: dict[str, Any], main_server: dict[str, Any] | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results: dict[str, Any] = {}
    checks = Checks()
    for name, r in raw.items():
        if isinstance(r, dict) and "failed" in r:
            checks.add(name, "the phase ran to its end", r["failed"], None, False)
    raw = {k: v for k, v in raw.items() if isinstance(v, dict) and "failed" not in v}
    idle = raw.get("idle")
    idle_lat: dict[int, float | None] = {}
    batch_s = None
    if idle:
        for documents in IDLE_REQUESTS:
            lat = _latencies(idle[f"docs_{documents}"])
            errors = [o for o in idle[f"docs_{documents}"]["outcomes"] if o.get("status") != 200]
            idle_lat[documents] = _median(lat) if not errors else None
        d = _delta(idle["metrics_before_300"], idle["metrics_after_300"])
        batch_s = d["mean_batch_seconds"]
        results["idle"] = {
            "latency_s": {f"docs_{k}": v for k, v in idle_lat.items()},
            "all_latencies_s": {f"docs_{k}": _latencies(idle[f"docs_{k}"]) for k in IDLE_REQUESTS},
            "errors": sum(o.get("status") != 200 for k in IDLE_REQUESTS for o in idle[f"docs_{k}"]["outcomes"]),
            "batch_seconds": batch_s,
            "batches_in_300_doc_request": d.get("rerankd_inference_duration_seconds_count"),
            "mean_batch_pairs_in_300_doc_request": (d["rerankd_batch_size_sum"] / d["rerankd_batch_size_count"]
                                                    if d.get("rerankd_batch_size_count") else None),
        }
    lat32, lat4, lat256 = idle_lat.get(32), idle_lat.get(4), idle_lat.get(256)

    capacity = raw.get("capacity")
    cap_pairs = None
    if capacity:
        phase = PhaseResult.from_dict(capacity["measured"])
        s = summarize(phase.outcomes, phase.wall_seconds)
        cap_pairs = s["goodput_pairs_per_s"]
        d = _delta(capacity["metrics_before"], capacity["metrics_after"])
        results["capacity"] = {"clients": CAPACITY_CLIENTS, "requests": CAPACITY_REQUESTS,
                               "requests_per_s": s["goodput_requests_per_s"], "pairs_per_s": cap_pairs,
                               "wall_seconds": phase.wall_seconds, "errors": s["requests"] - s["ok"],
                               "latency_s": s["latency_ok_s"], "model_busy_fraction": d["model_busy_fraction"],
                               "mean_batch_seconds": d["mean_batch_seconds"]}
        checks.add("capacity", "every request answered 200", s["requests"] - s["ok"], 0, s["ok"] == s["requests"])

    max_queue_wait = (main_server or {}).get("max_queue_wait", 30.0)
    for name in OPEN_FACTORS:
        r = raw.get(name)
        if not r:
            continue
        phase = PhaseResult.from_dict(r["phase"])
        s = summarize(phase.outcomes, phase.wall_seconds)
        d = _delta(r["metrics_before"], r["metrics_after"])
        results[name] = {"rate": r["rate"], "duration": r["duration"], "duration_capped": r["duration_capped"],
                         "summary": s, "model_busy_fraction": d["model_busy_fraction"],
                         "server_requests_by_status": d["rerank_requests_by_status"], "settle": r["settle"]}
        goodput = s["goodput_pairs_per_s"]
        limit = GOODPUT_FRACTION * cap_pairs if cap_pairs else None
        checks.add(name, f"goodput pairs/s >= {GOODPUT_FRACTION:.0%} of capacity", goodput, limit,
                   None if limit is None else goodput >= limit)
        others = {k: v for k, v in s["by_status"].items() if k not in ("200", "429")}
        checks.add(name, "every refusal is a 429", others or 0, 0, not others)
        ra = s["retry_after"]
        checks.add(name, "every 429 carries an integer Retry-After", ra["integer_fraction"], 1.0,
                   True if not ra["refused"] else ra["integer_fraction"] == 1.0,
                   "" if ra["refused"] else "no 429s")
        p99 = s["latency_refused_s"]["p99"]
        checks.add(name, f"429 p99 < {REFUSAL_P99_S * 1000:.0f} ms", p99, REFUSAL_P99_S,
                   True if p99 is None else p99 < REFUSAL_P99_S, "" if p99 is not None else "no 429s")
        checks.add(name, "no 503", s["status_503"], 0, s["status_503"] == 0)
        checks.add(name, "no 5xx", s["server_errors"], 0, s["server_errors"] == 0)
        checks.add(name, "no transport errors", s["transport_errors"] or 0, 0, not s["transport_errors"])
        served_p99 = s["latency_ok_s"]["p99"]
        limit = max_queue_wait + 2 * lat32 if lat32 is not None else None
        checks.add(name, "served p99 <= max_queue_wait + 2 x idle 32-doc", served_p99, limit,
                   None if limit is None or served_p99 is None else served_p99 <= limit)
        lag = s["send_lag_s"]["p99"]
        checks.add(name, f"(measurement) load generator kept up: send lag p99 < {CLIENT_LAG_P99_S * 1000:.0f} ms",
                   lag, CLIENT_LAG_P99_S, None if lag is None else lag < CLIENT_LAG_P99_S)

    fa = raw.get("fairness-a")
    if fa:
        limit = FAIRNESS_FACTOR * lat4 + batch_s if lat4 is not None and batch_s is not None else None
        trials = []
        for t in fa["trials"]:
            small = t.get("small", {})
            row = {"trial": t["trial"], "valid": t["valid"], "trigger_after_s": t.get("trigger_after_s"),
                   "small_latency_s": small.get("latency"), "small_status": small.get("status"),
                   "big_latency_s": t["big"].get("latency"), "big_status": t["big"].get("status"),
                   "small_finished_first": t.get("small_finished_first"), "reason": t.get("reason")}
            trials.append(row)
            value = row["small_latency_s"]
            ok = (None if limit is None or not t["valid"] or value is None
                  else value <= limit and row["small_status"] == 200)
            note = t.get("reason", "invalid trial") if not t["valid"] else \
                "" if row["small_status"] == 200 else f"4-doc answered {row['small_status'] or small.get('exception')}"
            checks.add("fairness-a", f"trial {t['trial'] + 1}: 4-doc <= 3 x idle 4-doc + one batch", value, limit, ok,
                       note)
        results["fairness-a"] = {"trigger": fa["trigger"], "limit_s": limit, "trials": trials}

    fb = raw.get("fairness-b")
    if fb:
        configs = []
        for c in fb["configs"]:
            phase = PhaseResult.from_dict(c["phase"])
            label = f"{c['small_clients']} small + {c['big_clients']} big"
            sizes = {}
            for documents, idle_value in ((FAIRNESS_B_SMALL, lat4), (FAIRNESS_B_BIG, lat256)):
                mine = [o for o in phase.outcomes if o.pairs == documents]
                s = summarize(mine, phase.wall_seconds)
                limit = FAIRNESS_FACTOR * idle_value + batch_s if idle_value is not None and batch_s is not None \
                    else None
                p95 = s["latency_ok_s"]["p95"]
                sizes[str(documents)] = {"summary": s, "limit_s": limit}
                checks.add("fairness-b", f"{label}: {documents}-doc p95 <= 3 x idle + one batch", p95, limit,
                           None if limit is None or p95 is None else p95 <= limit and s["ok"] == s["requests"],
                           "" if s["ok"] == s["requests"] else f"{s['requests'] - s['ok']} not 200")
            d = _delta(c["metrics_before"], c["metrics_after"])
            configs.append({"config": label, "duration": phase.duration, "wall_seconds": phase.wall_seconds,
                            "sizes": sizes, "model_busy_fraction": d["model_busy_fraction"]})
        results["fairness-b"] = {"configs": configs}

    storm = raw.get("storm")
    if storm:
        d = _delta(storm["metrics_before"], storm["metrics_after"])
        hang = PhaseResult.from_dict(storm["hang_ups"])
        s = summarize(hang.outcomes, hang.wall_seconds)
        drain_s = storm["drain"]["seconds_after_last_hang_up"]
        after = storm["after"]["outcomes"][0]
        after_lat = after.get("latency") if after.get("status") == 200 else None
        seen_499 = int(d["rerank_requests_by_status"].get("499", 0.0))
        # The check compares with this server's own idle 32-doc latency, measured just before the storm: same process,
        # same flags, same moment, so the ratio shows what the storm left behind and nothing else. The ratio to the
        # main server's idle figure is reported too.
        baseline = _median(_latencies(storm["baseline_32"]))
        results["storm"] = {
            "requests": STORM_REQUESTS, "hang_up_after_s": STORM_HANG_UP_S, "hung_up_unanswered": s["hung_up"],
            "answered_before_hang_up": s["by_status"], "server_saw_499": seen_499,
            "server_requests_by_status": d["rerank_requests_by_status"],
            "drained": storm["drain"]["drained"], "drain_seconds": drain_s, "batch_seconds": batch_s,
            "drain_over_batch": drain_s / batch_s if drain_s is not None and batch_s else None,
            "batches_after_storm": d.get("rerankd_inference_duration_seconds_count"),
            "model_seconds_after_storm": d.get("rerankd_inference_duration_seconds_sum"),
            "after_latency_s": after_lat, "after_status": after.get("status"),
            "storm_server_idle_32_latency_s": baseline,
            "after_over_idle": after_lat / baseline if after_lat is not None and baseline else None,
            "idle_32_latency_s": lat32,
            "after_over_main_idle": after_lat / lat32 if after_lat is not None and lat32 else None,
        }
        # A request answered before its client left is no hang-up; every other one should be a 499 at the server.
        expected_499 = STORM_REQUESTS - sum(s["by_status"].values())
        checks.add("storm", "the server saw every hang-up (499s)", seen_499, expected_499, seen_499 >= expected_499)
        limit = batch_s + STORM_DRAIN_SLACK_S if batch_s else None
        checks.add("storm", f"queue empty <= one batch + {STORM_DRAIN_SLACK_S:g} s after the last hang-up", drain_s,
                   limit,
                   None if limit is None else drain_s is not None and drain_s <= limit,
                   "" if storm["drain"]["drained"] else f"not drained within {STORM_DRAIN_TIMEOUT_S} s")
        ratio = results["storm"]["after_over_idle"]
        checks.add("storm", f"next request <= {STORM_LATENCY_RATIO}x this server's idle 32-doc latency", ratio,
                   STORM_LATENCY_RATIO,
                   None if ratio is None else ratio <= STORM_LATENCY_RATIO,
                   "" if after.get("status") == 200 else f"status {after.get('status')}: {after.get('error')}")
    return results, checks.items


# --------------------------------------------------------------------------- report

def _f(x: Any, spec: str = ".3f") -> str:
    if x is None:
        return "-"
    if isinstance(x, dict):
        return ", ".join(f"{k}: {_f(v, '.0f')}" for k, v in x.items()) or "0"
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def print_report(result: dict[str, Any], out_path: Path) -> None:
    r = result["results"]
    info = result["machine"]
    print(f"# Overload: shape {result['shape']}, seed {result['seed']}, open loops {result['duration']:g} s, "
          f"mixed loops {result['mixed_duration']:g} s")
    print(f"cpu {info['cpu']} ({info['usable_cpus']} usable CPUs), torch threads {info['torch_threads']}, "
          f"torch {result['versions']['torch']}")
    main = result["servers"].get("main")
    if main:
        print(f"server: {main['command']} (max_queue_wait {main['max_queue_wait']:g} s, "
              f"request_timeout {main['request_timeout']:g} s)")
    if "idle" in r:
        i = r["idle"]
        print("\n## Idle\n")
        print("| request | latency s |")
        print("| --- | --- |")
        for k, v in i["latency_s"].items():
            n = IDLE_REQUESTS[int(k.split("_")[1])]
            print(f"| {k.split('_')[1]} docs ({'median of ' + str(n) if n > 1 else '1 request'}) | {_f(v)} |")
        print(f"| one batch (300-doc request: {_f(i['batches_in_300_doc_request'], '.0f')} batches, "
              f"{_f(i['mean_batch_pairs_in_300_doc_request'], '.1f')} pairs each) | {_f(i['batch_seconds'])} |")
    if "capacity" in r:
        c = r["capacity"]
        print(f"\ncapacity ({c['clients']} clients, {c['requests']} x 32 docs): {c['requests_per_s']:.3f} req/s = "
              f"{c['pairs_per_s']:.1f} pairs/s; p50 {_f(c['latency_s']['p50'])} s; model busy "
              f"{_f(c['model_busy_fraction'], '.0%')}")
    rows = [n for n in OPEN_FACTORS if n in r]
    if rows:
        print("\n## Open loop (Poisson, 32 docs)\n")
        print("| phase | req/s offered | sent | 200 | 429 | other | goodput pairs/s | served p50 s | served p99 s | "
              "429 p99 ms | Retry-After | client lag p99/max ms | model busy |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for n in rows:
            o = r[n]
            s = o["summary"]
            other = {k: v for k, v in s["by_status"].items() if k not in ("200", "429")}
            other.update(s["transport_errors"])
            ra = s["retry_after"]
            ra_text = "-" if not ra["refused"] else f"{ra['fraction']:.0%} ({ra['min']}-{ra['max']} s)"
            p99r = s["latency_refused_s"]["p99"]
            lag = s["send_lag_s"]
            print(f"| {n}{' (window capped)' if o['duration_capped'] else ''} | {o['rate']:.3f} | {s['requests']} | "
                  f"{s['ok']} | {s['refused']} | {_f(other)} | {s['goodput_pairs_per_s']:.1f} | "
                  f"{_f(s['latency_ok_s']['p50'])} | {_f(s['latency_ok_s']['p99'])} | "
                  f"{_f(None if p99r is None else p99r * 1000, '.1f')} | {ra_text} | "
                  f"{_f(lag['p99'] * 1000 if lag['p99'] is not None else None, '.1f')}/"
                  f"{_f(lag['max'] * 1000 if lag['max'] is not None else None, '.1f')} | "
                  f"{_f(o['model_busy_fraction'], '.0%')} |")
    if "fairness-a" in r:
        fa = r["fairness-a"]
        print(f"\n## Fairness A: 4 docs sent while 300 docs run (trigger: {fa['trigger']})\n")
        print("| trial | sent after s | 4-doc status | 4-doc latency s | 300-doc status | 300-doc latency s | "
              "4-doc done first |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for t in fa["trials"]:
            print(f"| {t['trial'] + 1} | {_f(t['trigger_after_s'], '.2f')} | {_f(t['small_status'])} | "
                  f"{_f(t['small_latency_s'])} | {_f(t['big_status'])} | {_f(t['big_latency_s'])} | "
                  f"{_f(t['small_finished_first'])} |")
    if "fairness-b" in r:
        print("\n## Fairness B: mixed closed loop\n")
        print("| clients | size | requests | not 200 | p50 s | p95 s | limit s | goodput pairs/s |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for c in r["fairness-b"]["configs"]:
            for size, v in c["sizes"].items():
                s = v["summary"]
                print(f"| {c['config']} | {size} docs | {s['requests']} | {s['requests'] - s['ok']} | "
                      f"{_f(s['latency_ok_s']['p50'])} | {_f(s['latency_ok_s']['p95'])} | {_f(v['limit_s'])} | "
                      f"{s['goodput_pairs_per_s']:.1f} |")
    if "storm" in r:
        s = r["storm"]
        print(f"\n## Disconnect storm: {s['requests']} x 32 docs, hang-up after {s['hang_up_after_s']:g} s\n")
        print(f"- server-side 499s: {_f(s['server_saw_499'], '.0f')}; answered before the hang-up: "
              f"{_f(s['answered_before_hang_up'])}")
        print(f"- queue empty {_f(s['drain_seconds'])} s after the last hang-up = {_f(s['drain_over_batch'], '.2f')} "
              f"batches of {_f(s['batch_seconds'])} s; model ran {_f(s['batches_after_storm'], '.0f')} batches "
              f"({_f(s['model_seconds_after_storm'], '.2f')} s) from the storm on")
        print(f"- next 32-doc request: {_f(s['after_latency_s'])} s = {_f(s['after_over_idle'], '.2f')}x this "
              f"server's idle {_f(s['storm_server_idle_32_latency_s'])} s before the storm "
              f"({_f(s['after_over_main_idle'], '.2f')}x the main server's idle {_f(s['idle_32_latency_s'])} s)")
    print("\n## Checks\n")
    print("| phase | check | value | limit | pass |")
    print("| --- | --- | --- | --- | --- |")
    for c in result["checks"]:
        verdict = "n/a" if c["pass"] is None else "yes" if c["pass"] else "NO"
        note = f" ({c['note']})" if c["note"] else ""
        print(f"| {c['phase']} | {c['check']} | {_f(c['value'])} | {_f(c['limit'])} | {verdict}{note} |")
    passed = sum(c["pass"] is True for c in result["checks"])
    failed = sum(c["pass"] is False for c in result["checks"])
    print(f"\n{passed} passed, {failed} failed, {len(result['checks']) - passed - failed} not evaluated")
    shown = out_path.resolve()
    shown = shown.relative_to(Path.cwd()) if shown.is_relative_to(Path.cwd()) else shown
    print(f"(total {result['total_seconds']:.0f} s; wrote {shown}; command: {result['command']})")


# --------------------------------------------------------------------------- main

def _phases(text: str, parser: argparse.ArgumentParser) -> list[str]:
    asked = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in asked if p not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    needed = set(asked) | {"idle"}  # every check is relative to the idle figures
    if needed & set(OPEN_FACTORS):
        needed.add("capacity")
    added = sorted(needed - set(asked), key=PHASES.index)
    if added:
        progress(f"also running {', '.join(added)}: the phases asked for need their figures")
    return [p for p in PHASES if p in needed]


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--loadgen":
        loadgen_main(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="mini", choices=SHAPES)
    parser.add_argument("--duration", type=float, default=180,
                        help="seconds of arrivals per open-loop phase (180 or more for recorded figures)")
    parser.add_argument("--mixed-duration", type=float, default=150,
                        help="seconds of each fairness-b mixed closed loop")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma list, a subset of {','.join(PHASES)} (idle, and capacity for the open loops, are "
                        "always added)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the documents and the arrival times")
    parser.add_argument("--serve-args", default="", help="extra arguments for the main `rerankd serve`")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON output (default benchmarks/results/overload-<shape>.json)")
    args = parser.parse_args()
    if args.duration <= 0 or args.mixed_duration <= 0:
        parser.error("--duration and --mixed-duration must be positive")
    phases = _phases(args.phases, parser)
    if args.out is None and (args.duration < RECORDED_MIN_DURATION_S or set(phases) != set(PHASES)):
        parser.error(f"a run shorter than --duration {RECORDED_MIN_DURATION_S} or with only some --phases is a smoke "
                     "run: pass --out (e.g. /tmp/overload.json), so benchmarks/results keeps the recorded figures")
    out_path = args.out or HERE / "results" / f"overload-{args.shape}.json"
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()), *sys.argv[1:]])
    started_all = time.perf_counter()

    model = model_dir(args.shape)
    info = machine_info()
    # The servers get exactly our defaults: no RERANKD_* setting leaks in from this shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")}
    ignored_env = sorted(k for k in os.environ if k.startswith("RERANKD_"))
    spec = {"seed": args.seed, "duration": args.duration, "mixed_duration": args.mixed_duration}
    servers_info: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    main_phases = [p for p in phases if p != "storm"]
    with tempfile.TemporaryDirectory(prefix="bench-overload-") as tmp:
        work = Path(tmp)
        servers = Servers(work)
        previous_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            if main_phases:
                servers_info["main"], main_raw = run_server(servers, "main", model, shlex.split(args.serve_args), env,
                                                            main_phases, spec, work)
                raw.update(main_raw)
            if "storm" in phases:
                servers_info["storm"], storm_raw = run_server(servers, "storm", model, STORM_FLAGS, env, ["storm"],
                                                              spec, work)
                raw["storm"] = storm_raw.get("storm")
                if "_loadgen_failed" in storm_raw:
                    raw["_storm_loadgen_failed"] = storm_raw["_loadgen_failed"]
        finally:
            servers.stop_all()
            signal.signal(signal.SIGTERM, previous_term)

    raw = {k: v for k, v in raw.items() if v is not None}
    results, checks = figures(raw, servers_info.get("main"))
    result = {
        "benchmark": "overload",
        "shape": args.shape,
        "model_dir": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model),
        "seed": args.seed,
        "duration": args.duration,
        "mixed_duration": args.mixed_duration,
        "phases": phases,
        "workload": "1 query + N distinct docs per request; docs 20% 20-60 words, 60% 80-200, 20% 250-450 "
        "(rerankd.bench.workload mixed_documents), return_documents=false",
        "servers": servers_info,
        "results": results,
        "checks": checks,
        "ignored_rerankd_env": ignored_env,
        "machine": info,
        "versions": versions(),
        "command": command,
        "total_seconds": time.perf_counter() - started_all,
        "raw": raw,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print_report(result, out_path)


if __name__ == "__main__":
    main()
