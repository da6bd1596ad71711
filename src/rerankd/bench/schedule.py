"""Arrival times for an open loop."""

from __future__ import annotations

import random


def poisson_schedule(rate: float, duration: float, seed: int = 0, count: int | None = None) -> list[float]:
    """Poisson arrivals: exponential gaps of mean `1 / rate`, from 0 up to (not including) `duration`.

    The same seed gives the same times, so a run can be repeated request for request.

    Args:
        rate: Mean arrivals per second; must be positive.
        duration: Length of the arrival window in seconds.
        seed: Seed of the private random generator (the global one is not touched).
        count: Most arrivals; with `duration=math.inf`, exactly this many.

    Returns:
        Arrival times in seconds, increasing; about `rate * duration` of them.

    Example:
        >>> times = poisson_schedule(rate=10, duration=60, seed=1)
        >>> times == poisson_schedule(10, 60, seed=1), 500 < len(times) < 700
        (True, True)
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if duration < 0:
        raise ValueError(f"duration must not be negative, got {duration}")
    if count is None and duration == float("inf"):
        raise ValueError("an endless schedule: give a finite duration or a count")
    rng = random.Random(seed)
    times: list[float] = []
    t = rng.expovariate(rate)
    while t < duration and (count is None or len(times) < count):
        times.append(t)
        t += rng.expovariate(rate)
    return times
