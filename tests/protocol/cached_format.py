"""The cache entry format of ``CachedSessionStore``, for a test store that fills the cache its
own way (``test_broken.FillsBlindly``)."""

from __future__ import annotations

from typing import Any

from sessionware.stores import cached


def pack(version: Any, data: bytes) -> bytes:
    packed = cached._pack(version, data)
    assert packed is not None
    return packed


def unpack(entry: bytes) -> Any:
    return cached._unpack(entry)
