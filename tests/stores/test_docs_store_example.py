"""The example store of docs/stores.md ("Writing your own store"), run through the contract."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sessionware.testing.store_contract import StoreContract
from tests.docs_examples import blocks

PAGE = Path(__file__).resolve().parents[2] / "docs" / "stores.md"


def _example_store() -> type[Any]:
    [example] = [b for b in blocks(PAGE) if b.language == "python" and "class DictStore" in b.code]
    module = types.ModuleType("dict_store_example")
    exec(compile(example.code, str(PAGE), "exec"), module.__dict__)
    return module.DictStore  # type: ignore[no-any-return]


DictStore = _example_store()


class TestTheDocumentedStore(StoreContract):
    @pytest.fixture
    async def record_store(self) -> AsyncIterator[Any]:
        yield DictStore()
