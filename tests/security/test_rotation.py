"""Key rotation end to end: ``keys=[current, *older]`` over HTTP, every mode, cookie + server stores.

Cookies sealed with an older key of the ring keep working and come back sealed with the current
key in the same response (no store write needed); a key dropped from the ring is retired: its
cookies open to an empty session. New cookies are only ever sealed with the current key.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote

import pytest

from sessionware import ContentSecurity, Key
from sessionware.crypto import unseal
from tests.client import request
from tests.security.apps import build, read, set_cookie, start, warnings
from tests.security.conftest import Backend

USER = {"user_id": "alice", "cart": ["apple"]}


def opens_with(security: ContentSecurity, keys: list[Key], value: str) -> bool:
    return unseal(security, keys, "id", unquote(value)) is not None


async def test_old_key_in_ring_works_and_is_reissued_under_current(
    backend: Backend, security: ContentSecurity
) -> None:
    old, new = Key.generate(), Key.generate()
    cookie = await start(build(backend, security, key=old), USER)
    ring = build(backend, security, keys=[new, old])
    backend.store.calls.clear()
    r = await request(ring, "GET", "/all", cookies={"id": cookie})
    assert r.status == 200 and r.json() == USER
    reissued = set_cookie(r)
    assert opens_with(security, [new], reissued), "re-issued under the current key"
    assert not opens_with(security, [old], reissued)
    assert backend.store.writes == [], "re-sealing needs no store write"
    # The re-issued cookie needs the old key no more; the same session is behind it.
    only_new = build(backend, security, key=new)
    assert await read(only_new, reissued) == USER
    r = await request(ring, "POST", "/set", cookies={"id": reissued}, json={"n": 1})
    assert r.json() == {**USER, "n": 1}
    assert await read(only_new, set_cookie(r)) == {**USER, "n": 1}


async def test_cookie_under_current_key_is_not_reissued(
    backend: Backend, security: ContentSecurity
) -> None:
    old, new = Key.generate(), Key.generate()
    ring = build(backend, security, keys=[new, old])
    cookie = await start(ring, USER)
    assert opens_with(security, [new], cookie) and not opens_with(security, [old], cookie)
    r = await request(ring, "GET", "/all", cookies={"id": cookie})
    assert r.json() == USER and r.set_cookies == []


async def test_retired_key_gives_an_empty_session(
    backend: Backend, security: ContentSecurity, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sessionware")
    old, new = Key.generate(), Key.generate()
    cookie = await start(build(backend, security, key=old), USER)
    retired = build(backend, security, key=new)
    backend.store.calls.clear()
    caplog.clear()
    r = await request(retired, "GET", "/all", cookies={"id": cookie})
    assert r.status == 200 and r.json() == {} and r.set_cookies == []
    assert backend.store.calls == [], "a cookie that does not open never reaches the store"
    assert len(warnings(caplog)) == 1
    r = await request(retired, "POST", "/set", cookies={"id": cookie}, json={"k": 1})
    assert r.json() == {"k": 1} and backend.store.writes == ["put"]


async def test_three_generations(backend: Backend, security: ContentSecurity) -> None:
    k1, k2, k3 = Key.generate(), Key.generate(), Key.generate()
    gen1 = build(backend, security, key=k1)
    idle = await start(gen1, {"who": "idle"})
    active = await start(gen1, {"who": "active"})
    gen2 = build(backend, security, keys=[k2, k1])
    active = set_cookie(await request(gen2, "GET", "/all", cookies={"id": active}))
    gen3 = build(backend, security, keys=[k3, k2])
    assert await read(gen3, idle) == {}, "never refreshed during generation 2: retired"
    r = await request(gen3, "GET", "/all", cookies={"id": active})
    assert r.json() == {"who": "active"}
    assert opens_with(security, [k3], set_cookie(r))


async def test_ring_order_matters(backend: Backend, security: ContentSecurity) -> None:
    """The first key seals (Flask CVE-2025-47278 put a fallback first)."""
    old, new = Key.generate(), Key.generate()
    cookie = await start(build(backend, security, keys=[new, old]), USER)
    assert opens_with(security, [new], cookie)
    assert await read(build(backend, security, key=old), cookie) == {}


async def test_rotation_does_not_cross_modes(backend: Backend, security: ContentSecurity) -> None:
    old, new = Key.generate(), Key.generate()
    ring = build(backend, security, keys=[new, old])
    for other in ContentSecurity:
        if other is not security:
            cookie = await start(build(backend, other, key=old), USER)
            assert await read(ring, cookie) == {}, f"a {other.name} cookie opened"
