"""Where a stage's time goes, for the benchmarks: set CHURN_TIMINGS=<file> and each stage process appends
one JSON line with its phases (startup = interpreter and imports, store, logging, write; compute is the
rest) and its peak memory. Costs nothing when the variable is unset."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

_phases: dict[str, float] = {}


@contextmanager
def phase(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        _phases[name] = _phases.get(name, 0.0) + time.perf_counter() - start


def timed(name: str):
    """Decorator form of `phase`."""

    def wrap(function):
        from functools import wraps

        @wraps(function)
        def inner(*args, **kwargs):
            with phase(name):
                return function(*args, **kwargs)

        return inner

    return wrap


def _process_age() -> float:
    """Seconds since the stage's process started (under a fork server, since its client started: the
    client's interpreter start-up and hand-over are part of the stage's cost)."""
    from churn.system import process_age

    age = process_age()
    if age is not None:
        return age
    import psutil

    return time.time() - psutil.Process().create_time()


@contextmanager
def stage_timings(stage: str) -> Iterator[None]:
    """Around a stage's main(): on exit, append its timings to $CHURN_TIMINGS (if set)."""
    target = os.environ.get("CHURN_TIMINGS")
    startup = _process_age() if target else 0.0
    try:
        yield
    finally:
        if target:
            import resource

            total = _process_age()
            record = {"stage": stage, "startup": round(startup, 3), "total": round(total, 3)}
            record["ended"] = round(time.time(), 3)  # wall clock: lets the benchmarks lay runs on a timeline
            record.update({k: round(v, 3) for k, v in _phases.items()})
            record["compute"] = round(total - startup - sum(_phases.values()), 3)
            record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            with open(target, "a") as handle:
                handle.write(json.dumps(record) + "\n")
