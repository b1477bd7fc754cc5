"""How much JSON state fits in a cookie, measured through the middleware, against what
docs/stores.md says (issue 16 item 11: the docs claimed 4064 bytes)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from sessionware import ContentSecurity, Key, SessionMiddleware
from sessionware.stores import CookieSessionStore
from tests.client import request

STORES_MD = Path(__file__).resolve().parents[2] / "docs" / "stores.md"
TRIES = 20
"""A size fits when this many cookies in a row fit (PRIVATE's nonce changes each one's length)."""


def documented(mode: str) -> int:
    text = " ".join(STORES_MD.read_text(encoding="utf-8").split())
    found = re.search(rf"at most \*\*([\d,]+) bytes\*\* with `{mode}`", text)
    assert found is not None, f"docs/stores.md states no measured budget for {mode}"
    return int(found.group(1).replace(",", ""))


def state_of(size: int) -> dict[str, str]:
    """A state of ASCII letters whose compact JSON is ``size`` bytes (``{"d":"aaa..."}``)."""
    return {"d": "a" * (size - len('{"d":""}'))}


class Budget:
    """The default middleware over a cookie store; ``fits(n)``: does an ``n``-byte state fit."""

    def __init__(self, mode: ContentSecurity) -> None:
        self.size = 0

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope["session"].update(state_of(self.size))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        self.middleware = SessionMiddleware(
            app, store=CookieSessionStore(), key=Key.generate(), content_security=mode
        )

    async def fits(self, size: int) -> bool:
        self.size = size
        assert len(json.dumps(state_of(size), separators=(",", ":"))) == size
        for _ in range(TRIES):
            response = await request(self.middleware, "GET", "/")
            if response.status != 200:
                assert response.status == 500 and response.header("set-cookie") is None
                return False
            assert len(response.header("set-cookie") or "") <= 4096
        return True

    async def largest(self) -> int:
        low, high = 0, 4096
        while low < high:
            middle = (low + high + 1) // 2
            if await self.fits(middle):
                low = middle
            else:
                high = middle - 1
        return low


@pytest.mark.parametrize("mode", [ContentSecurity.PRIVATE, ContentSecurity.SIGNED])
async def test_the_documented_cookie_budget_is_what_fits(mode: ContentSecurity) -> None:
    name = mode.name
    claim = documented(name)
    budget = Budget(mode)
    measured = await budget.largest()
    assert await budget.fits(claim), f"{name}: a {claim}-byte state does not fit ({measured} does)"
    # The docs round down for safety, but not by more than 2 %.
    assert measured - claim <= measured // 50, f"{name}: measured {measured}, docs say {claim}"
