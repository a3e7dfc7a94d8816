"""The garbage collector's settings for a process that does one bulk job (the CLI's consent import).

CPython's cyclic collector runs a young collection every 700 allocations of tracked objects and, now and then, a
full one that walks every tracked object of the process: after start-up that is the service's modules, SQLAlchemy's
mappers and tables, hundreds of thousands of objects that live as long as the process. An import allocates several
tracked objects per line (dicts, dataclasses, UUIDs in tuples) that die with their batch, so these collections cost
about a fifth of its CPU (measured: ``bench/import_steps.py``, 2.9 → 2.3 CPU seconds for 20,000 lines) and find
little. :func:`bulk_job` moves what start-up made out of the collector's sight (:func:`gc.freeze`) and collects the
young generation ten times less often; cycles are still collected, and memory stays flat (a batch's objects are
freed by reference counting when the batch ends, as before).

Only for a process of its own (a CLI command): the API's server keeps the interpreter's settings.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: Allocations of tracked objects between young collections during a bulk job (the interpreter's default: 700).
YOUNG_THRESHOLD = 50_000


@contextlib.contextmanager
def bulk_job() -> Iterator[None]:
    """Within: the objects that exist now are not walked again, and young collections are rarer; restored after."""
    thresholds = gc.get_threshold()
    gc.collect()  # what start-up left as garbage goes now, not into the frozen generation
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, thresholds[1], thresholds[2])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
