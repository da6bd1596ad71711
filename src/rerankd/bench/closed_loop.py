"""Closed loops: each client sends its next request when the previous answer arrives.

A closed loop measures capacity: the server is never offered more than C
requests at once, so its throughput at C clients is what it can sustain. Two
forms share one driver: a fixed list of bodies shared by all clients
(`closed_loop`), or per-client body sources for a fixed time
(`timed_closed_loop`), e.g. 3 clients sending small requests and 1 sending big
ones.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from rerankd.bench.bodies import BodyLike, RequestBody, as_body
from rerankd.bench.client import make_client, post
from rerankd.bench.outcome import Outcome, PhaseResult

# take(client, elapsed seconds) -> the next body for that client, or None when the client is done.
_Take = Callable[[int, float], "RequestBody | None"]


async def closed_loop(url: str, bodies: Sequence[BodyLike], clients: int, *, timeout: float = 600.0,
                      headers: Mapping[str, str] | None = None,
                      on_outcome: Callable[[Outcome], None] | None = None) -> PhaseResult:
    """Send every body once, from `clients` concurrent closed-loop clients.

    Clients take the next unsent body in order, so outcome `i` is `bodies[i]` whichever client sent it.

    Args:
        url: Full URL of the endpoint, e.g. `http://127.0.0.1:8000/v1/rerank`.
        bodies: The request bodies, all sent; encoded before the clock starts.
        clients: Concurrent clients (at most one request each in flight); one connection each.
        timeout: Client timeout per request, seconds.
        headers: Headers sent with every request (an API key).
        on_outcome: Called with each outcome as it comes in (a progress bar).

    Returns:
        The phase: outcomes in body order; `wall_seconds` from the first send to the last answer.

    Example:
        >>> import asyncio
        >>> bodies = [rerank_body("q", ["a", "b"]) for _ in range(10)]  # doctest: +SKIP
        >>> phase = asyncio.run(closed_loop("http://127.0.0.1:8000/v1/rerank", bodies, clients=4))  # doctest: +SKIP
        >>> summarize(phase.outcomes, phase.wall_seconds)["goodput_pairs_per_s"]  # doctest: +SKIP
    """
    encoded = [as_body(b) for b in bodies]
    queue = iter(encoded)

    def take(client: int, elapsed: float) -> RequestBody | None:
        return next(queue, None)

    return await _drive(url, take, min(clients, len(encoded)), timeout, None, headers, on_outcome)


async def timed_closed_loop(url: str, sources: Sequence[Iterable[BodyLike]], duration: float, *,
                            timeout: float = 600.0, headers: Mapping[str, str] | None = None,
                            on_outcome: Callable[[Outcome], None] | None = None) -> PhaseResult:
    """Run one closed-loop client per source for `duration` seconds.

    Each client sends bodies from its own source, one after the other, and sends no new request once `duration`
    has passed (the ones in flight are waited for) or its source is exhausted. Sources may be generators, so a
    long run need not build its bodies in advance; a generator's work is done between requests, off the clock of
    the request it makes.

    Args:
        url: Full URL of the endpoint.
        sources: One iterable of bodies per client.
        duration: Seconds during which new requests are sent.
        timeout: Client timeout per request, seconds.
        headers: Headers sent with every request (an API key).
        on_outcome: Called with each outcome as it comes in (a progress bar).

    Returns:
        The phase: outcomes in the order they were sent, each with its `client`; `duration` as given.

    Example:
        >>> small = (rerank_body("q", docs(4)) for _ in itertools.count())  # doctest: +SKIP
        >>> big = (rerank_body("q", docs(256)) for _ in itertools.count())  # doctest: +SKIP
        >>> asyncio.run(timed_closed_loop(url, [small, small, small, big], duration=60))  # doctest: +SKIP
    """
    iterators: list[Iterator[BodyLike]] = [iter(s) for s in sources]

    def take(client: int, elapsed: float) -> RequestBody | None:
        if elapsed >= duration:
            return None
        body = next(iterators[client], None)
        return None if body is None else as_body(body)

    return await _drive(url, take, len(iterators), timeout, duration, headers, on_outcome)


async def _drive(url: str, take: _Take, clients: int, timeout: float, duration: float | None,
                 headers: Mapping[str, str] | None, on_outcome: Callable[[Outcome], None] | None) -> PhaseResult:
    outcomes: list[Outcome] = []
    counter = itertools.count()
    async with make_client(timeout, connections=max(clients, 1), headers=headers) as http:
        started = time.perf_counter()

        async def run_client(client: int) -> None:
            while (body := take(client, free := time.perf_counter() - started)) is not None:
                # take() and next(counter) run in one step, with no await between: indexes follow take order.
                # The request was due when its client was free, the moment take() checked against the deadline;
                # building its body is counted between that and `sent`, not in its latency.
                outcome = await post(http, url, body, index=next(counter), phase_start=started, scheduled=free,
                                     client_id=client)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)

        await asyncio.gather(*(run_client(c) for c in range(clients)))
        wall = time.perf_counter() - started
    outcomes.sort(key=lambda o: o.index)
    return PhaseResult(outcomes, wall, duration, started_at=started)
