"""What one request did, and what one phase of load did.

Times are seconds on `time.perf_counter`'s clock, relative to the start of the
phase, so outcomes from different phases and processes can be compared and
stored as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Outcome:
    """The record of one request.

    Attributes:
        index: Position of the request in its phase (the order bodies were given or taken).
        pairs: Pairs the request asked for (documents per request).
        scheduled: When the request was due: its Poisson arrival in an open loop, the moment its client was free in
            a closed loop.
        sent: When its first byte went on the wire (connection set-up included, so `sent - scheduled` is the
            client-side lag).
        latency: Seconds from `sent` to the last byte of the answer; None when no answer came (a hang-up).
        status: HTTP status; None on a transport error or when the client hung up first.
        exception: Exception type name on a transport error (`ReadTimeout`, `ConnectError`, ...).
        error: The error message: the JSON `message` of a non-200 answer, or the exception's text.
        retry_after: The `Retry-After` header as sent, when present.
        tokens: `usage.total_tokens` of a 200 answer.
        results: Number of `results` in a 200 answer.
        client: Closed-loop client that sent it; None in an open loop.
        hung_up: When the client closed the connection without reading the answer (hang-up phases only).

    Example:
        >>> o = Outcome(index=0, pairs=4, scheduled=1.0, sent=1.002, latency=0.05, status=200)
        >>> round(o.lag, 3), o.ok
        (0.002, True)
    """

    index: int
    pairs: int
    scheduled: float
    sent: float
    latency: float | None = None
    status: int | None = None
    exception: str | None = None
    error: str | None = None
    retry_after: str | None = None
    tokens: int | None = None
    results: int | None = None
    client: int | None = None
    hung_up: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the request was answered 200."""
        return self.status == 200

    @property
    def lag(self) -> float:
        """Seconds between when the request was due and when it was sent: the load generator's own delay."""
        return self.sent - self.scheduled

    @property
    def finished(self) -> float | None:
        """When the last byte of the answer arrived (phase clock); None without an answer."""
        return None if self.latency is None else self.sent + self.latency

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; times rounded to microseconds, None fields left out."""
        out = {}
        for key, value in asdict(self).items():
            if value is None:
                continue
            out[key] = round(value, 6) if isinstance(value, float) else value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        """The inverse of `to_dict`; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class PhaseResult:
    """Every outcome of one phase of load.

    Attributes:
        outcomes: One per request, ordered by `index`.
        wall_seconds: From the phase's start to its last answer (or hang-up).
        duration: The phase's nominal length: the arrival window of an open loop or the sending window of a timed
            closed loop; None for a fixed list of requests.
        started_at: `time.perf_counter()` at the phase's start, to line the phase up with other events in the
            same process (not stored in JSON: another process's clock means nothing).
        extra: Other facts about the phase the caller wants stored with it (rate, seed, ...), kept as JSON.

    Example:
        >>> phase = PhaseResult([Outcome(0, 32, 0.0, 0.0, 1.5, 200)], wall_seconds=1.5)
        >>> PhaseResult.from_dict(phase.to_dict()).outcomes[0].status
        200
    """

    outcomes: list[Outcome]
    wall_seconds: float
    duration: float | None = None
    started_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"wall_seconds": round(self.wall_seconds, 6), "duration": self.duration, **self.extra,
                "outcomes": [o.to_dict() for o in self.outcomes]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhaseResult:
        """The inverse of `to_dict`."""
        extra = {k: v for k, v in data.items() if k not in ("wall_seconds", "duration", "outcomes")}
        return cls([Outcome.from_dict(o) for o in data["outcomes"]], data["wall_seconds"], data.get("duration"),
                   extra=extra)
