"""The shipped contract suite (sessionware.testing.store_contract) over every record store."""

from __future__ import annotations

import asyncio
import inspect
import time
import warnings
from collections.abc import AsyncIterator

import pytest

from sessionware.stores import MemorySessionStore, RecordStore
from sessionware.testing.store_contract import Advance, StoreContract
from tests.conftest import FACTORIES, SERVER_SIDE


class ManualClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class TestEveryStore(StoreContract):
    @pytest.fixture(params=SERVER_SIDE)
    def factory(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    def clock(self, factory: str) -> ManualClock | None:
        takes_clock = "clock" in inspect.signature(FACTORIES[factory].store).parameters
        return ManualClock() if takes_clock else None

    @pytest.fixture
    async def record_store(
        self, factory: str, clock: ManualClock | None
    ) -> AsyncIterator[RecordStore]:
        options = {} if clock is None else {"clock": clock}
        async with FACTORIES[factory].store(**options) as store:
            yield store

    @pytest.fixture
    def advance(self, clock: ManualClock | None, factory: str) -> Advance:
        margin: float = getattr(FACTORIES[factory], "EXPIRY_MARGIN", 1.1)

        async def move(seconds: float) -> None:
            if clock is None:
                await asyncio.sleep(seconds + margin)
            else:
                clock.now += seconds + 0.001

        return move


class TestKeysInClear(StoreContract):
    """The suite over a store that keeps actix's layout (``hash_keys=False``): ids shown and
    taken by the admin are still the keys' SHA-256 (issue 28 item 8)."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    @pytest.fixture
    async def record_store(self, clock: ManualClock) -> AsyncIterator[RecordStore]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # a store's clock= (tests only)
            store = MemorySessionStore(clock=clock, hash_keys=False)
        yield store

    @pytest.fixture
    def advance(self, clock: ManualClock) -> Advance:
        async def move(seconds: float) -> None:
            clock.now += seconds + 0.001

        return move
