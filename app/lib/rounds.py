"""Background work in rounds (the dispatcher, the webhook sender): the loop, the retry delay, the worker's heap."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


async def work_until(
    stop: asyncio.Event, one_round: Callable[[], Awaitable[int]], idle_sleep: float, *, failed: str, **context: Any
) -> None:
    """Run ``one_round`` until ``stop`` is set; sleep ``idle_sleep`` after a round that found nothing.

    A round that fails is logged as ``failed`` (with ``context``) and the loop goes on: it must not die.
    """
    while not stop.is_set():
        try:
            handled = await one_round()
        except Exception:  # a failed round is logged and retried
            log.exception(failed, **context)
            handled = 0
        if not handled:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), idle_sleep)


def freeze_startup_heap() -> None:
    """Put what start-up made (modules, the engine, settings, adapters) out of the cyclic garbage collector's way.

    A long-running worker's every full collection walked all of it again (some 150,000 objects, ~90 ms of CPU
    each; four of them in 5,000 messages of ``bench/dispatch.py``, about 15 % of the worker's CPU per message:
    docs/benchmarks.md), while the rounds' own objects are what becomes garbage. Collected once first, so nothing
    that is already garbage is kept: a frozen object is never collected as part of a cycle (``gc.freeze``), so only
    start-up's, which live as long as the process, should be; call it once, when start-up is over. Reference counting
    frees objects as before, and cycles made later are collected as before.
    """
    gc.collect()
    gc.freeze()


def backoff(attempt: int, base: float, maximum: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1, 2, …): doubling from ``base`` up to ``maximum``, ±50 %."""
    delay: float = min(maximum, base * 2.0 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.5)  # noqa: S311  # jitter, not a secret
