"""Fewer garbage collections while a plan is written or replayed.

Every consumed record brings a list of header tuples, every copy a new one, every index row a
tuple and a view: a replay allocates tens of container objects per dead letter and keeps almost
none of them, and none of them in a reference cycle. CPython's cyclic collector runs a young
collection every 700 allocations and, every hundred of those, walks every object alive (the
imported modules included): measured on `dlq replay --plan` of 100,000 dead letters, 15-25% of
the process's CPU. Here the objects alive when the work starts are frozen (left out of every
collection: they live as long as the process anyway) and a young collection waits for 50,000
allocations; cycles are still collected, and the previous settings come back afterwards.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG = 50_000
"""Allocations between two young collections (CPython's default is 700): a few MB at most."""


@contextmanager
def few_collections() -> Iterator[None]:
    """Freeze what is alive and collect less often inside the block."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
