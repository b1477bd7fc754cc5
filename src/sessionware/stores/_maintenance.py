"""Deleting expired rows in small batches, so maintenance never holds up a request for long.

The SQL stores' ``clear_expired`` share this loop: each batch is one short statement (its own
transaction) deleting at most ``batch_size`` expired rows in ``expires`` order through the
expires index. After each batch the loop waits as long as the batch took: the event loop runs,
a request waiting for the same rows, lock or connection gets in, and the database spends at
most half its time on maintenance, so concurrent commits do not queue behind one batch's log
flush after another (benchmarks/bench_maintenance.py measures the stall).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["DEFAULT_BATCH", "ProgressHook", "delete_in_batches"]

DEFAULT_BATCH = 500
"""Rows per batch. A row costs about 5 µs to delete on SQLite, 10-15 µs on PostgreSQL and
30-40 µs on MariaDB (the row and two index entries, and the log): 500 keep a batch, and so the
longest a request can wait for one, at a few milliseconds (up to about 20 on MariaDB), while a
statement's own cost stays small next to the rows it deletes."""

ProgressHook = Callable[[int], object]
"""Called after each batch that deleted rows, with the number of rows deleted so far."""


async def delete_in_batches(
    delete: Callable[[str, int], Awaitable[int]],
    tables: Sequence[str],
    batch_size: int,
    on_batch: ProgressHook | None,
) -> int:
    """``await delete(table, batch_size)`` for each table until a batch comes up short; the
    rows deleted in all. ``delete`` deletes at most ``batch_size`` expired rows of ``table``."""
    if batch_size < 1:
        raise ValueError(
            f"batch_size must be a whole number of rows, at least 1; got {batch_size!r}"
        )
    total = 0
    for table in tables:
        while True:
            started = time.monotonic()
            deleted = await delete(table, batch_size)
            took = time.monotonic() - started
            total += deleted
            if on_batch is not None and deleted:
                on_batch(total)
            if deleted < batch_size:
                break
            await asyncio.sleep(took)
    return total
