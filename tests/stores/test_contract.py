"""The shipped contract suite (sessionware.testing.store_contract) over every record store."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator

import pytest

from sessionware.stores import RecordStore
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
