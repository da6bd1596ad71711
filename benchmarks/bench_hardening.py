"""Hardening (issue 11): what a failing Redis, keyless or oversized requests and long documents cost `rerankd serve`.

Four phases, each on its own servers, on the `tiny` fixture by default (the figures are about the server's own
work, not the model's); all traffic is on 127.0.0.1:

1. redis (needs `redis-server` on PATH; skipped, with a message, without it). Servers started with
   `--cache-url` and `--cache-size 1`, so every request reaches Redis:
   - slowed: Redis behind tests/delay_proxy.py. 5 warm-up and --slow-requests timed 1-document requests
     (baseline), then the proxy holds every reply back --redis-delay seconds and --slow-requests more are timed.
     Once with the default breaker (`--cache-breaker-threshold 3`), once with a breaker that never opens (10^9).
   - killed under load: 4 closed-loop clients of 3-document requests; after 5 s Redis is killed (SIGKILL), 3 s
     after the breaker opens it is started again (empty), and 5 s after the breaker closes the clients stop.
     Requests, failures, latency p50/p99 before the kill, from the kill until the breaker closed and after it;
     time from the restart to the breaker closing; Redis errors and dropped writes from /metrics.
   - restarted while idle: 8 documents are scored and written to Redis; Redis is restarted and given its keys
     back, and the next request for the same 8 documents goes out on pooled connections that died. Hits of
     that first request (8 = the dead connections were retried, not counted as misses).
2. auth: a server with `--api-key`; --auth-requests requests each of a ~5 MB Cohere body and a ~5 MB TEI body
   (5,000 documents of 1,000 characters) without a key (401 before the body is read), and the Cohere body with
   the key (read, parsed and validated, then 413: more than --max-documents). Client latency median and max,
   and the server's CPU time per request (utime + stime of its process from /proc/<pid>/stat, all its threads).
3. flood: a server with `--api-key` and `--max-body-bytes 1 MiB`; 16 each of five hostile kinds (over the
   limit with a key, over the limit without one, keyless, keyless TEI, wrong key; 0.5-1 MiB bodies) and 16 valid
   requests, interleaved, 16 connections at once (over the limit is 413 with or without a key: the declared
   length is checked first). Status and latency per kind, and whether the server lives.
4. tokenize: one long-document request, encoded in a fresh process per measurement, per case (--tokenize-cases):
   - engine: `rerankd.engine.PairEncoder.encode`, which tokenizes each text only as far as its pair can use;
   - full: the same untruncated Rust tokenizer called on the whole texts (`encode_batch`, no truncation), and
     the pairs cut from those ids: what the encoder did before issue 11;
   - parse: `json.loads` + `RerankRequest.model_validate` of the request's body, under tracemalloc.
   Time, peak RSS over the RSS before (VmHWM, reset through /proc/self/clear_refs), the most token ids held at
   once, and whether engine and full give identical pairs. max_length 512, query_max_length 384.

    python benchmarks/bench_hardening.py                                 # all phases, tiny: a few minutes
    python benchmarks/bench_hardening.py --phases auth,flood --out /tmp/hardening.json

Prints Markdown tables (progress on stderr) and writes benchmarks/results/hardening.json (or --out): the command,
machine, versions, load average, settings and figures. A run of only some phases needs --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The test harness runs real servers and Redis: the benchmark uses it rather than a second copy.
sys.path[:0] = [str(HERE), str(ROOT / "tests"), str(ROOT / "tests" / "server")]

from bench_server import machine_info, model_dir, versions  # noqa: E402

PHASES = ("redis", "auth", "flood", "tokenize")
SHAPES = ("tiny", "mini")
QUERY = "What do giant pandas eat?"
MiB = 1024 * 1024

KILL_CLIENTS, KILL_BEFORE_S, KILL_DOWN_S, KILL_AFTER_S = 4, 5.0, 3.0, 5.0
BREAKER_WAIT_S = 60.0
IDLE_DOCS = 8
API_KEY = "bench-key"
AUTH_DOCS, AUTH_DOC = 5000, "bamboo forest river " * 50  # ~5 MB of JSON
FLOOD_LIMIT, FLOOD_EACH, FLOOD_CONNECTIONS = MiB, 16, 16
MAX_LENGTH, QUERY_MAX_LENGTH = 512, 384
# script, documents, characters each: about the most the default --max-body-bytes (8 MiB) and
# --max-document-chars (200,000) let in; Chinese is sent JSON-escaped, 6 bytes a character.
TOKENIZE_CASES = "en:40x200000,en:1000x8000,zh:20x50000"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _quantile(values: list[float], q: float) -> float | None:
    return _ms(sorted(values)[int(q * (len(values) - 1))]) if values else None


def _server_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, every thread


def _status_kib(pid: int | str, key: str) -> int | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


# --------------------------------------------------------------------------- redis

def phase_redis(model: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from delay_proxy import DelayProxy
    from helpers import RedisServer

    def slowed(threshold: int) -> dict[str, Any]:
        (work / f"slow-{threshold}").mkdir()
        with contextlib.ExitStack() as stack:
            store = RedisServer(work / f"slow-{threshold}")
            store.start()
            stack.callback(store.stop)
            proxy = DelayProxy(store.port)
            stack.callback(proxy.close)
            server = _server(stack, model, ["--cache-url", proxy.url, "--cache-size", "1",
                                            "--cache-breaker-threshold", str(threshold)], {"RERANKD_NO_CACHE": "0"},
                             work)
            with server.client() as c:
                for i in range(5):
                    _rerank(c, [f"warm {threshold} {i}"])
                base = [_rerank(c, [f"base {threshold} {i}"]) for i in range(args.slow_requests)]
                proxy.delay = args.redis_delay
                slow = [_rerank(c, [f"slow {threshold} {i}"]) for i in range(args.slow_requests)]
            return {"breaker_threshold": threshold, "redis_delay_s": args.redis_delay, "requests": len(slow),
                    "baseline_median_ms": _ms(statistics.median(base)),
                    "slowed_first3_ms": [_ms(x) for x in slow[:3]],
                    "slowed_rest_median_ms": _ms(statistics.median(slow[3:])),
                    "slowed_mean_ms": _ms(statistics.mean(slow)),
                    "breaker_open_at_end": server.metric("rerankd_cache_breaker_open", layer="redis")}

    progress("redis: slowed, with the default breaker")
    out: dict[str, Any] = {"slowed_with_breaker": slowed(3)}
    progress("redis: slowed, breaker never opens")
    out["slowed_breaker_never_opens"] = slowed(10**9)
    progress("redis: killed and restarted under load")
    out["killed_under_load"] = _redis_killed(model, work)
    progress("redis: restarted while idle")
    out["restarted_while_idle"] = _redis_idle_restart(model, work)
    return out


def _server(stack: contextlib.ExitStack, model: Path, flags: list[str], env: dict[str, str], work: Path) -> Any:
    from server_harness import ServerProcess

    server = ServerProcess([model], ["--device", "cpu", *flags], env=env, log_dir=work).start()
    stack.callback(server.stop)
    return server


def _rerank(client: Any, docs: list[str]) -> float:
    started = time.perf_counter()
    r = client.post("/rerank", json={"query": QUERY, "documents": docs, "return_documents": False})
    if r.status_code != 200 or len(r.json()["results"]) != len(docs):
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
    return time.perf_counter() - started


def _redis_metrics(server: Any) -> dict[str, float]:
    def m(name: str, **labels: str) -> float:
        return server.metric(name, layer="redis", **labels) or 0

    return {"get_errors": m("rerankd_cache_errors_total", op="get"),
            "set_errors": m("rerankd_cache_errors_total", op="set"),
            "probe_errors": m("rerankd_cache_errors_total", op="probe"),
            "dropped_writes_error": m("rerankd_cache_dropped_writes_total", reason="error"),
            "dropped_writes_queue_full": m("rerankd_cache_dropped_writes_total", reason="queue_full")}


def _redis_killed(model: Path, work: Path) -> dict[str, Any]:
    import httpx
    from helpers import RedisServer, wait_until

    (work / "killed").mkdir()
    with contextlib.ExitStack() as stack:
        store = RedisServer(work / "killed")
        store.start()
        stack.callback(store.stop)
        server = _server(stack, model, ["--cache-url", store.url], {"RERANKD_NO_CACHE": "0"}, work)
        stop = threading.Event()
        answered: list[tuple[float, float]] = []  # (answered at, latency)
        failed: list[str] = []
        lock = threading.Lock()

        def client(seed: int) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        latency = _rerank(c, [f"c{seed} r{n} a", f"c{seed} r{n} b", "shared"])
                        with lock:
                            answered.append((time.monotonic(), latency))
                    except Exception as e:  # noqa: BLE001 - every failure is a figure
                        with lock:
                            failed.append(repr(e))

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(KILL_CLIENTS)]
        for t in threads:
            t.start()
        try:
            time.sleep(KILL_BEFORE_S)
            killed = time.monotonic()
            store.stop()
            wait_until(lambda: server.metric("rerankd_cache_breaker_open", layer="redis") == 1, BREAKER_WAIT_S,
                       message="breaker open")
            opened = time.monotonic()
            time.sleep(KILL_DOWN_S)
            restarted = time.monotonic()
            store.start()
            wait_until(lambda: server.metric("rerankd_cache_breaker_open", layer="redis") == 0, BREAKER_WAIT_S,
                       message="breaker closed")
            closed = time.monotonic()
            time.sleep(KILL_AFTER_S)
        finally:
            stop.set()
            for t in threads:
                t.join(90)
        before = [d for t, d in answered if t < killed]
        outage = [d for t, d in answered if killed <= t < closed]
        after = [d for t, d in answered if t >= closed]
        return {"clients": KILL_CLIENTS, "requests": len(answered) + len(failed), "failed": len(failed),
                "failures": failed[:5], "breaker_opened_after_kill_s": round(opened - killed, 2),
                "redis_down_s": round(restarted - killed, 2),
                "breaker_closed_after_restart_s": round(closed - restarted, 2),
                "requests_before": len(before), "requests_outage": len(outage), "requests_after": len(after),
                "p50_ms_before": _quantile(before, 0.5), "p99_ms_before": _quantile(before, 0.99),
                "p50_ms_outage": _quantile(outage, 0.5), "p99_ms_outage": _quantile(outage, 0.99),
                "p50_ms_after": _quantile(after, 0.5), "p99_ms_after": _quantile(after, 0.99),
                **_redis_metrics(server)}


def _redis_idle_restart(model: Path, work: Path) -> dict[str, Any]:
    import redis
    from helpers import RedisServer, wait_until

    (work / "idle").mkdir()
    docs = [f"idle restart {i}" for i in range(IDLE_DOCS)]
    with contextlib.ExitStack() as stack:
        store = RedisServer(work / "idle")
        store.start()
        stack.callback(store.stop)
        server = _server(stack, model, ["--cache-url", store.url, "--cache-size", "1"], {"RERANKD_NO_CACHE": "0"},
                         work)
        with server.client() as c:
            _rerank(c, docs)
            wait_until(lambda: c.get("/info").json()["cache"]["redis"]["write_queue"]["pending"] == 0, 30,
                       message="writes flushed")
            r = redis.Redis.from_url(store.url)
            saved = {k: r.get(k) for k in r.keys()}
            store.stop()
            store.start()  # the same port; started empty, so its keys are put back
            r = redis.Redis.from_url(store.url)
            for k, v in saved.items():
                r.set(k, v)
            started = time.perf_counter()
            resp = c.post("/rerank", json={"query": QUERY, "documents": docs})
            latency = time.perf_counter() - started
        return {"documents": len(docs), "keys_restored": len(saved), "status": resp.status_code,
                "hits": int(resp.headers.get("x-cache-hits", -1)), "latency_ms": _ms(latency),
                "get_errors": server.metric("rerankd_cache_errors_total", layer="redis", op="get") or 0}


# --------------------------------------------------------------------------- auth and flood

def phase_auth(model: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import httpx

    docs = [AUTH_DOC] * AUTH_DOCS
    cohere = json.dumps({"query": "q", "documents": docs}).encode()
    tei = json.dumps({"query": "q", "texts": docs}).encode()
    plain = {"content-type": "application/json"}
    keyed = {**plain, "Authorization": f"Bearer {API_KEY}"}
    sends = {"cohere, no key": (cohere, plain), "tei, no key": (tei, plain), "cohere, with key": (cohere, keyed)}
    rows = []
    with contextlib.ExitStack() as stack:
        server = _server(stack, model, ["--api-key", API_KEY], {"RERANKD_NO_CACHE": "1"}, work)
        pid = server.proc.pid
        with httpx.Client(base_url=server.url, timeout=120) as c:
            for kind, (body, headers) in sends.items():
                progress(f"auth: {kind}, {len(body) / 1e6:.1f} MB x {args.auth_requests}")
                c.post("/rerank", content=body, headers=headers)  # warm-up, not counted
                times, statuses = [], set()
                cpu_before = _server_cpu_s(pid)
                for _ in range(args.auth_requests):
                    started = time.perf_counter()
                    r = c.post("/rerank", content=body, headers=headers)
                    times.append(time.perf_counter() - started)
                    statuses.add(r.status_code)
                cpu = _server_cpu_s(pid) - cpu_before
                rows.append({"kind": kind, "body_bytes": len(body), "requests": args.auth_requests,
                             "statuses": sorted(statuses), "error_shape": sorted(r.json()),
                             "latency_median_ms": _ms(statistics.median(times)), "latency_max_ms": _ms(max(times)),
                             "server_cpu_ms_per_request": _ms(cpu / args.auth_requests)})
        peak = _status_kib(pid, "VmHWM")
    return {"rows": rows, "server_peak_rss_mib": round(peak / 1024) if peak else None,
            "server_flags": ["--api-key", "KEY"]}


def phase_flood(model: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import httpx
    from server_harness import DOCS

    over = json.dumps({"query": QUERY, "documents": ["a" * FLOOD_LIMIT]}).encode()
    near = json.dumps({"query": QUERY, "documents": ["a" * (FLOOD_LIMIT - 1000)]}).encode()
    tei = json.dumps({"query": QUERY, "texts": ["a" * (FLOOD_LIMIT // 2)]}).encode()
    plain = {"content-type": "application/json"}
    keyed = {**plain, "Authorization": f"Bearer {API_KEY}"}
    sends = {"over the limit, key": (over, keyed, 413), "over the limit, no key": (over, plain, 413),
             "no key": (near, plain, 401), "tei, no key": (tei, plain, 401),
             "wrong key": (near, {**keyed, "Authorization": "Bearer nope"}, 401)}
    kinds = [*sends] * FLOOD_EACH + ["valid"] * FLOOD_EACH
    kinds = kinds[::2] + kinds[1::2]  # interleaved

    async def flood(url: str) -> tuple[list[tuple[str, int | None, float]], float]:
        limits = httpx.Limits(max_connections=FLOOD_CONNECTIONS)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
            async def one(kind: str) -> tuple[str, int | None, float]:
                started = time.perf_counter()
                try:
                    if kind == "valid":
                        r = await c.post("/rerank", json={"query": QUERY, "documents": DOCS}, headers=keyed)
                    else:
                        r = await c.post("/rerank", content=sends[kind][0], headers=sends[kind][1])
                    status: int | None = r.status_code
                except httpx.HTTPError:
                    status = None
                return kind, status, time.perf_counter() - started

            started = time.perf_counter()
            out = await asyncio.gather(*(one(k) for k in kinds))
            return out, time.perf_counter() - started

    progress(f"flood: {len(kinds)} requests, {FLOOD_CONNECTIONS} connections")
    with contextlib.ExitStack() as stack:
        server = _server(stack, model, ["--api-key", API_KEY, "--max-body-bytes", str(FLOOD_LIMIT)],
                         {"RERANKD_NO_CACHE": "1"}, work)
        pid = server.proc.pid
        cpu_before = _server_cpu_s(pid)
        out, total = asyncio.run(flood(server.url))
        cpu = _server_cpu_s(pid) - cpu_before
        alive = server.returncode is None
        health = httpx.get(server.url + "/health", timeout=10).status_code if alive else None
        peak = _status_kib(pid, "VmHWM") if alive else None
    rows = []
    for kind in [*sends, "valid"]:
        mine = [(status, s) for k, status, s in out if k == kind]
        expected = sends[kind][2] if kind in sends else 200
        statuses = sorted({str(status) for status, _ in mine})
        rows.append({"kind": kind, "requests": len(mine), "body_bytes": len(sends[kind][0]) if kind in sends else None,
                     "statuses": statuses, "expected": expected, "as_expected": statuses == [str(expected)],
                     "latency_median_ms": _ms(statistics.median(s for _, s in mine)),
                     "latency_max_ms": _ms(max(s for _, s in mine))})
    return {"rows": rows, "requests": len(out), "seconds": round(total, 2),
            "mib_sent": round(sum(len(sends[k][0]) for k in kinds if k != "valid") / MiB, 1),
            "server_cpu_s": round(cpu, 2), "server_peak_rss_mib": round(peak / 1024) if peak else None,
            "alive": alive, "health": health, "max_body_bytes": FLOOD_LIMIT}


# --------------------------------------------------------------------------- tokenize

def _documents(script: str, count: int, chars: int) -> list[str]:
    from helpers import LONG_EN, LONG_ZH

    unit = LONG_EN + " " if script == "en" else LONG_ZH
    text = (unit * (chars // len(unit) + 1))[:chars]
    return [f"{i} {text}"[:chars] for i in range(count)]


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)
        return True
    except OSError:
        return False


def _digest(pairs: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:16]


def tokenize_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process; its result as a dict."""
    docs = _documents(spec["script"], spec["documents"], spec["chars"])
    side = spec["side"]
    if side == "parse":
        import tracemalloc

        from rerankd.server.schemas import RerankRequest

        body = json.dumps({"query": QUERY, "documents": docs}).encode()
        del docs
        reset = _reset_peak_rss()
        rss_before = _status_kib("self", "VmRSS") or 0
        tracemalloc.start()
        started = time.perf_counter()
        request = RerankRequest.model_validate(json.loads(body))
        seconds = time.perf_counter() - started
        held, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(request.documents) == spec["documents"]
        return {"body_bytes": len(body), "seconds": seconds, "tracemalloc_peak_bytes": peak,
                "tracemalloc_held_bytes": held, "peak_rss_over_before_kib": (_status_kib("self", "VmHWM") or 0)
                - rss_before, "peak_reset": reset}

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from rerankd.engine import PairEncoder

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    encoder = PairEncoder(tokenizer, MAX_LENGTH, QUERY_MAX_LENGTH)
    held = [0]
    if side == "engine":
        encode = encoder._encode  # every tokenizer call the encoder makes goes through here

        def counted(texts: list[str]) -> list[tuple[list[int], list[int | None]]]:
            out = encode(texts)
            held[0] = max(held[0], sum(len(ids) for ids, _ in out))
            return out

        encoder._encode = counted  # type: ignore[method-assign]
    else:
        rust = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        rust.no_truncation()
        rust.no_padding()
        template = encoder.template
    reset = _reset_peak_rss()
    rss_before = _status_kib("self", "VmRSS") or 0
    started = time.perf_counter()
    if side == "engine":
        encoded = encoder.encode(QUERY, docs)
        pairs = [p.input_ids for p in encoded]
        truncated = sum(p.truncated for p in encoded)
    else:  # whole texts, then cut, as the encoder did before issue 11
        query_ids = rust.encode(QUERY, add_special_tokens=False).ids
        doc_ids = [e.ids for e in rust.encode_batch(docs, add_special_tokens=False)]
        held[0] = len(query_ids) + sum(len(ids) for ids in doc_ids)
        query_room = max(1, min(QUERY_MAX_LENGTH, MAX_LENGTH - template.num_special_tokens - 1))
        query = query_ids[:query_room]
        room = MAX_LENGTH - template.num_special_tokens - len(query)
        pairs = [template.build(query, ids[:room], encoder.with_token_types)[0] for ids in doc_ids]
        truncated = sum(len(ids) > room or len(query_ids) > query_room for ids in doc_ids)
    seconds = time.perf_counter() - started
    peak = _status_kib("self", "VmHWM") or 0
    return {"seconds": seconds, "rss_before_kib": rss_before, "peak_rss_over_before_kib": peak - rss_before,
            "peak_reset": reset, "ids_held_at_once": held[0], "kept_tokens": sum(map(len, pairs)),
            "truncated": truncated, "pairs_digest": _digest(pairs)}


def phase_tokenize(model: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rows = []
    for case in args.tokenize_cases.split(","):
        script, _, size = case.partition(":")
        count, _, chars = size.partition("x")
        row: dict[str, Any] = {"case": case, "script": script, "documents": int(count), "chars": int(chars),
                               "text_mib": round(int(count) * int(chars) / MiB, 2)}
        for side in ("parse", "engine", "full"):
            progress(f"tokenize: {case}, {side}")
            spec = {"side": side, "model": str(model), "script": script, "documents": int(count),
                    "chars": int(chars)}
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--tokenize-worker",
                                   json.dumps(spec)], capture_output=True, text=True, cwd=ROOT, timeout=900)
            if proc.returncode != 0:
                raise SystemExit(f"tokenize worker {spec} failed:\n{proc.stderr[-3000:]}")
            row[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        row["identical_pairs"] = row["engine"]["pairs_digest"] == row["full"]["pairs_digest"]
        rows.append(row)
    return {"rows": rows, "max_length": MAX_LENGTH, "query_max_length": QUERY_MAX_LENGTH,
            "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM")}


# --------------------------------------------------------------------------- report

def print_report(result: dict[str, Any], out_path: Path) -> None:
    figures = result["figures"]
    for phase, why in result["skipped"].items():
        print(f"\n**{phase}: skipped** ({why})")
    if "redis" in figures:
        r = figures["redis"]
        print(f"\n### Redis slowed ({r['slowed_with_breaker']['redis_delay_s']:g} s on every reply), "
              "1-document requests, --cache-size 1\n")
        print("| breaker | baseline median | slowed: first 3 | slowed: rest median | slowed: mean |")
        print("| --- | --- | --- | --- | --- |")
        for name, key in (("threshold 3 (default)", "slowed_with_breaker"), ("never opens", "slowed_breaker_never_opens")):
            s = r[key]
            print(f"| {name} | {s['baseline_median_ms']} ms | {', '.join(f'{x:g}' for x in s['slowed_first3_ms'])} ms "
                  f"| {s['slowed_rest_median_ms']} ms | {s['slowed_mean_ms']} ms ({s['requests']} requests) |")
        k = r["killed_under_load"]
        print(f"\n### Redis killed under load ({k['clients']} clients, 3-document requests)\n")
        print("| figure | value |\n| --- | --- |")
        print(f"| requests / failed | {k['requests']} / {k['failed']} |")
        print(f"| breaker opened after the kill | {k['breaker_opened_after_kill_s']} s |")
        print(f"| Redis down | {k['redis_down_s']} s |")
        print(f"| breaker closed after the restart | {k['breaker_closed_after_restart_s']} s |")
        for when in ("before", "outage", "after"):
            print(f"| p50 / p99 {when} ({k['requests_' + when]} requests) | {k['p50_ms_' + when]} / "
                  f"{k['p99_ms_' + when]} ms |")
        print(f"| Redis errors get / set / probe | {k['get_errors']:g} / {k['set_errors']:g} / {k['probe_errors']:g} |")
        print(f"| dropped writes: error / queue full | {k['dropped_writes_error']:g} / "
              f"{k['dropped_writes_queue_full']:g} |")
        i = r["restarted_while_idle"]
        print(f"\n### Redis restarted while idle: the first request after it\n\n| documents | status | hits | get errors "
              f"| latency |\n| --- | --- | --- | --- | --- |\n| {i['documents']} | {i['status']} | {i['hits']} | "
              f"{i['get_errors']:g} | {i['latency_ms']} ms |")
    if "auth" in figures:
        a = figures["auth"]
        print("\n### Unauthenticated ~5 MB bodies (`--api-key`)\n")
        print("| body | size | status | latency median | latency max | server CPU per request |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row in a["rows"]:
            print(f"| {row['kind']} | {row['body_bytes'] / 1e6:.1f} MB | {row['statuses']} | "
                  f"{row['latency_median_ms']} ms | {row['latency_max_ms']} ms | {row['server_cpu_ms_per_request']} ms |")
        print(f"\nserver peak RSS {a['server_peak_rss_mib']} MiB")
    if "flood" in figures:
        f = figures["flood"]
        print(f"\n### Flood (`--api-key`, `--max-body-bytes {f['max_body_bytes']}`, {FLOOD_CONNECTIONS} connections)\n")
        print("| kind | requests | body | statuses (expected) | latency median | latency max |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row in f["rows"]:
            size = f"{row['body_bytes'] / MiB:.2f} MiB" if row["body_bytes"] else "5 docs"
            print(f"| {row['kind']} | {row['requests']} | {size} | {', '.join(row['statuses'])} ({row['expected']}) | "
                  f"{row['latency_median_ms']} ms | {row['latency_max_ms']} ms |")
        print(f"\n{f['requests']} requests ({f['mib_sent']} MiB sent) in {f['seconds']} s; server CPU "
              f"{f['server_cpu_s']} s, peak RSS {f['server_peak_rss_mib']} MiB; alive {f['alive']}, "
              f"/health {f['health']}")
    if "tokenize" in figures:
        t = figures["tokenize"]
        print(f"\n### Tokenizing one long-document request (max_length {t['max_length']}), a fresh process each\n")
        print("| case | text | side | time | peak RSS over before | ids held at once | kept tokens | truncated |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for row in t["rows"]:
            for side in ("engine", "full"):
                s = row[side]
                print(f"| {row['case']} | {row['text_mib']} MiB | {side} | {s['seconds']:.2f} s | "
                      f"{s['peak_rss_over_before_kib'] / 1024:.0f} MiB | {s['ids_held_at_once']:,} | "
                      f"{s['kept_tokens']:,} | {s['truncated']} |")
        print("\n| case | body | parse + validate | tracemalloc peak | held after | engine = full pairs |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row in t["rows"]:
            p = row["parse"]
            print(f"| {row['case']} | {p['body_bytes'] / MiB:.1f} MiB | {p['seconds'] * 1000:.0f} ms | "
                  f"{p['tracemalloc_peak_bytes'] / MiB:.0f} MiB | {p['tracemalloc_held_bytes'] / MiB:.0f} MiB | "
                  f"{'yes' if row['identical_pairs'] else 'NO'} |")
    print(f"\nload average (1, 5, 15 min) at start {result['load_average']['start']}, at end "
          f"{result['load_average']['end']}; {result['machine']['usable_cpus']} CPUs")
    shown = out_path.resolve()
    shown = shown.relative_to(Path.cwd()) if shown.is_relative_to(Path.cwd()) else shown
    print(f"(total {result['total_seconds']:.0f} s; wrote {shown}; command: {result['command']})")


# --------------------------------------------------------------------------- main

def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--tokenize-worker":
        print(json.dumps(tokenize_worker(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny", choices=SHAPES)
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma list, a subset of {','.join(PHASES)}")
    parser.add_argument("--slow-requests", type=int, default=20, help="timed requests, before and while Redis is slow")
    parser.add_argument("--redis-delay", type=float, default=2.0, help="seconds the proxy holds back each Redis reply")
    parser.add_argument("--auth-requests", type=int, default=20, help="timed requests per ~5 MB body")
    parser.add_argument("--tokenize-cases", default=TOKENIZE_CASES,
                        help="comma list of SCRIPT:DOCSxCHARS, SCRIPT en or zh (default %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/hardening.json)")
    args = parser.parse_args()
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    if args.out is None and set(phases) != set(PHASES):
        parser.error("a run of only some --phases is partial: pass --out (e.g. /tmp/hardening.json), so "
                     "benchmarks/results keeps a full run")
    if args.slow_requests < 4 or args.auth_requests < 1:
        parser.error("--slow-requests must be at least 4 and --auth-requests at least 1")
    out_path = args.out or HERE / "results" / "hardening.json"
    command = shlex.join(["python", os.path.relpath(__file__, Path.cwd()), *sys.argv[1:]])
    started_all = time.perf_counter()
    model = model_dir(args.shape)
    info = machine_info()
    ignored_env = sorted(k for k in os.environ if k.startswith("RERANKD_"))  # the harness strips them

    runners: dict[str, Callable[[Path, argparse.Namespace, Path], dict[str, Any]]] = {
        "redis": phase_redis, "auth": phase_auth, "flood": phase_flood, "tokenize": phase_tokenize}
    figures: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    loads: dict[str, Any] = {"start": load_average()}
    for phase in [p for p in PHASES if p in phases]:
        if phase == "redis" and shutil.which("redis-server") is None:
            skipped[phase] = "redis-server is not on PATH (apt-get install redis-server)"
            progress(f"redis: skipped, {skipped[phase]}")
            continue
        loads[phase] = {"start": load_average()}
        with tempfile.TemporaryDirectory(prefix=f"bench-hardening-{phase}-") as work:
            figures[phase] = runners[phase](model, args, Path(work))
        loads[phase]["end"] = load_average()
    loads["end"] = load_average()

    result = {
        "benchmark": "hardening",
        "shape": args.shape,
        "model_dir": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model),
        "phases": phases,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "figures": figures,
        "skipped": skipped,
        "load_average": loads,
        "ignored_rerankd_env": ignored_env,
        "machine": info,
        "versions": versions() | {"redis-server": _redis_version()},
        "command": command,
        "total_seconds": time.perf_counter() - started_all,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    print_report(result, out_path)


def _redis_version() -> str | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return None


if __name__ == "__main__":
    main()
