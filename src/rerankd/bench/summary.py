"""Figures from outcomes: counts by status, goodput, latency percentiles, Retry-After coverage, client lag."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from rerankd.bench.outcome import Outcome

ERROR_SAMPLES = 5
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile, by linear interpolation between closest ranks (numpy's default); None when empty.

    Example:
        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
        >>> percentile([5.0, 1.0, 3.0], 100)
        5.0
    """
    xs = sorted(values)
    if not xs:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_stats(values: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p95, p99, max and mean of a list of seconds (None figures when it is empty).

    Example:
        >>> latency_stats([0.1, 0.2, 0.3])["p50"]
        0.2
    """
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
        "mean": sum(values) / len(values) if values else None,
    }


def summarize(outcomes: Sequence[Outcome], duration: float) -> dict[str, Any]:
    """The figures of one phase.

    Args:
        outcomes: The phase's outcomes (or any subset, e.g. one request size).
        duration: Seconds to spread goodput over, usually the phase's `wall_seconds` (start to last answer).

    Returns:
        A JSON-ready dict:

        - `requests`, `by_status` (HTTP status -> count), `transport_errors` (exception type -> count),
          `hung_up` (hang-ups with no answer), and the totals `ok` (200), `refused` (429), `status_503`,
          `server_errors` (5xx), `transport_error_count`;
        - `goodput_pairs_per_s` and `goodput_requests_per_s`: pairs (documents) and requests answered 200, per
          second of `duration`; `ok_pairs`, `ok_tokens` (sum of `usage.total_tokens`), `short_answers` (200s
          whose results count differs from the pairs asked for);
        - `latency_ok_s` (200s: send to full answer) and `latency_refused_s` (429s: time to refusal), each
          count/p50/p95/p99/max/mean;
        - `retry_after`: how many 429s carry the header, the fraction, the fraction that are a non-negative integer
          number of seconds, and the min/median/max of those values;
        - `send_lag_s`: stats of sent - scheduled, the load generator's own delay;
        - `errors`: the most frequent error messages (numbers in them don't make a message distinct), each with one
          example and its count.

    Example:
        >>> outcomes = [Outcome(0, 32, 0.0, 0.0, 2.0, 200), Outcome(1, 32, 1.0, 1.0, 0.01, 429, retry_after="4")]
        >>> s = summarize(outcomes, duration=4.0)
        >>> s["goodput_pairs_per_s"], s["retry_after"]["fraction"]
        (8.0, 1.0)
    """
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration}")
    answered = [o for o in outcomes if o.status is not None]
    by_status = Counter(o.status for o in answered)
    transport = Counter(o.exception for o in outcomes if o.status is None and o.exception)
    hung_up = sum(1 for o in outcomes if o.status is None and o.exception is None and o.hung_up is not None)
    ok = [o for o in answered if o.status == 200]
    refused = [o for o in answered if o.status == 429]
    headers = [o.retry_after for o in refused if o.retry_after is not None]
    seconds = [int(h) for h in headers if h.strip().isdigit()]
    return {
        "requests": len(outcomes),
        "by_status": {str(k): by_status[k] for k in sorted(by_status)},
        "transport_errors": dict(sorted(transport.items())),
        "hung_up": hung_up,
        "ok": len(ok),
        "refused": len(refused),
        "status_503": by_status.get(503, 0),
        "server_errors": sum(n for status, n in by_status.items() if status >= 500),
        "transport_error_count": sum(transport.values()),
        "duration_s": duration,
        "ok_pairs": sum(o.pairs for o in ok),
        "ok_tokens": sum(o.tokens or 0 for o in ok),
        "short_answers": sum(1 for o in ok if o.results != o.pairs),
        "goodput_pairs_per_s": sum(o.pairs for o in ok) / duration,
        "goodput_requests_per_s": len(ok) / duration,
        "latency_ok_s": latency_stats([o.latency for o in ok if o.latency is not None]),
        "latency_refused_s": latency_stats([o.latency for o in refused if o.latency is not None]),
        "retry_after": {
            "refused": len(refused),
            "with_header": len(headers),
            "fraction": len(headers) / len(refused) if refused else None,
            "integer_fraction": len(seconds) / len(refused) if refused else None,
            "min": min(seconds) if seconds else None,
            "p50": percentile(seconds, 50),
            "max": max(seconds) if seconds else None,
        },
        "send_lag_s": latency_stats([o.lag for o in outcomes]),
        "errors": error_kinds([o.error for o in outcomes if o.error]),
    }


def error_kinds(messages: Iterable[str], top: int = ERROR_SAMPLES) -> list[dict[str, Any]]:
    """The `top` most frequent kinds of message, a kind being the message with its numbers masked.

    Example:
        >>> error_kinds(["busy: 10.2 s queued", "busy: 11.0 s queued", "timed out"])
        [{'example': 'busy: 10.2 s queued', 'count': 2}, {'example': 'timed out', 'count': 1}]
    """
    counts: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for message in messages:
        kind = _NUMBER.sub("#", message)
        counts[kind] += 1
        examples.setdefault(kind, message)
    return [{"example": examples[kind], "count": n} for kind, n in counts.most_common(top)]
