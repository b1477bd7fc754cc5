"""Deleting expired rows in small batches, so maintenance never holds up a request for long.

The SQL stores' ``clear_expired`` share this loop: each batch is one short statement (its own
transaction) deleting at most ``batch_size`` expired rows in ``expires`` order through the
expires index; between batches the event loop runs, and a request waiting for the same rows,
lock or connection gets in before the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["DEFAULT_BATCH", "ProgressHook", "delete_in_batches"]

DEFAULT_BATCH = 500
"""Rows per batch. Deleting a row costs a few microseconds to a few tens of microseconds (two
index entries each, and the row): 500 keep one batch, and so the longest a concurrent write
waits for it, at a few milliseconds on SQLite, PostgreSQL and MariaDB alike, while the cost per
statement stays small next to the rows it deletes (benchmarks/bench_maintenance.py)."""

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
            deleted = await delete(table, batch_size)
            total += deleted
            if on_batch is not None and deleted:
                on_batch(total)
            if deleted < batch_size:
                break
            await asyncio.sleep(0)  # the event loop's other tasks run between batches
    return total
