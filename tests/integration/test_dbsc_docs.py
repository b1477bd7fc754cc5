"""The FastAPI example of docs/device-binding.md runs as written, and binds as it says."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dbsc_device import Device, refresh_challenge, registration_challenge

PAGE = Path(__file__).resolve().parents[2] / "docs" / "device-binding.md"
REGISTER = "/.well-known/sessionware/dbsc/register"
REFRESH = "/.well-known/sessionware/dbsc/refresh"


def example_app(monkeypatch: pytest.MonkeyPatch) -> Any:
    blocks = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) == 1
    monkeypatch.setenv("SESSION_KEY", secrets.token_hex(64))
    namespace: dict[str, Any] = {"__name__": "device_binding_example"}
    exec(compile(blocks[0], str(PAGE), "exec"), namespace)
    return namespace["app"]


async def test_the_fastapi_example(monkeypatch: pytest.MonkeyPatch) -> None:
    app = example_app(monkeypatch)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as browser:
        login = await browser.post("/login", params={"user": "alice"})
        assert login.json() == {"hello": "alice"}
        assert (await browser.get("/admin/report")).status_code == 403, "not bound yet"
        device = Device()
        proof = device.register(
            registration_challenge(login.headers["secure-session-registration"])
        )
        registered = await browser.post(REGISTER, headers={"secure-session-response": proof})
        assert registered.status_code == 200
        sid = registered.json()["session_identifier"]
        assert (await browser.get("/admin/report")).json() == {"only on a bound device": "alice"}

        browser.cookies.delete("id-bound")  # the credential lapsed
        assert (await browser.get("/admin/report")).status_code == 403
        asked = await browser.post(REFRESH, headers={"sec-secure-session-id": sid})
        challenge = refresh_challenge(asked.headers["secure-session-challenge"])
        headers = {
            "sec-secure-session-id": sid,
            "secure-session-response": device.refresh(challenge),
        }
        assert (await browser.post(REFRESH, headers=headers)).status_code == 200
        assert (await browser.get("/me")).json() == {"user": "alice"}
        assert (await browser.get("/admin/report")).status_code == 200
