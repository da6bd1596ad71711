"""Open loop: requests arrive on a schedule, whatever happened to the earlier ones.

This is how overload looks from the server: clients don't wait for each
other, so when arrivals outpace service the queue grows until the server
refuses work. A closed loop can't show that (its clients slow down with the
server). Each request is its own task, and the client has no connection
limit, so nothing queues on the client side; each outcome's `lag`
(sent - scheduled) shows whether the generator kept up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

from rerankd.bench.bodies import BodyLike, as_body
from rerankd.bench.client import UNLIMITED_KEEPALIVE, make_client, post
from rerankd.bench.outcome import Outcome, PhaseResult


async def open_loop(url: str, schedule: Sequence[float], bodies: Sequence[BodyLike], *, timeout: float = 600.0,
                    duration: float | None = None, keepalive: int = UNLIMITED_KEEPALIVE,
                    prime_url: str | None = None, headers: Mapping[str, str] | None = None,
                    on_outcome: Callable[[Outcome], None] | None = None) -> PhaseResult:
    """Send `bodies[i]` at `schedule[i]` seconds after the start, each in its own task.

    Args:
        url: Full URL of the endpoint.
        schedule: Arrival times in seconds, increasing (see `poisson_schedule`).
        bodies: At least one body per arrival; encoded before the clock starts.
        timeout: Client timeout per request, seconds.
        duration: The arrival window, stored with the phase (default: the last arrival time).
        keepalive: Idle connections kept for reuse; connections themselves are unlimited (see
            `client.UNLIMITED_KEEPALIVE` for why it is small).
        prime_url: A cheap URL (e.g. the server's `/health`) fetched once before the clock starts, so the client's
            first-use costs (lazy imports, its first connection: some 20 ms) are not charged as lag to the first
            arrivals.
        headers: Headers sent with every request (an API key).
        on_outcome: Called with each outcome as it comes in (a progress bar).

    Returns:
        The phase: outcomes in schedule order; `wall_seconds` from the start to the last answer.

    Example:
        >>> times = poisson_schedule(rate=2.0, duration=60, seed=0)
        >>> bodies = [rerank_body(QUERY, next_docs(32)) for _ in times]  # doctest: +SKIP
        >>> phase = asyncio.run(open_loop("http://127.0.0.1:8000/v1/rerank", times, bodies))  # doctest: +SKIP
        >>> summarize(phase.outcomes, phase.wall_seconds)["send_lag_s"]["max"]  # doctest: +SKIP
    """
    if len(bodies) < len(schedule):
        raise ValueError(f"{len(schedule)} arrivals but only {len(bodies)} bodies")
    if any(b < a for a, b in zip(schedule, schedule[1:])):
        raise ValueError("the schedule must be increasing")
    encoded = [as_body(b) for b in bodies[: len(schedule)]]
    async with make_client(timeout, connections=None, keepalive=keepalive, headers=headers) as http:
        if prime_url is not None:
            await http.get(prime_url)
        started = time.perf_counter()
        tasks = []
        for index, (due, body) in enumerate(zip(schedule, encoded)):
            delay = started + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(post(http, url, body, index=index, phase_start=started, scheduled=due))
            if on_outcome is not None:
                task.add_done_callback(lambda done: on_outcome(done.result()))
            tasks.append(task)
        outcomes = await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
    window = duration if duration is not None else (schedule[-1] if schedule else 0.0)
    return PhaseResult(list(outcomes), wall, window, started_at=started)
