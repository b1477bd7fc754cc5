"""The ``sessionware`` command, called as ``main([...])`` with captured output."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sessionware import ContentSecurity, Key
from sessionware.cli import main
from sessionware.crypto import seal
from sessionware.state import encode_state
from sessionware.stores import generate_session_key
from sessionware.stores.base import ABSENT
from sessionware.stores.sqlite import SQLiteSessionStore
from tests.services import require

KEY = Key.generate()
HEX = (KEY.signing_key + KEY.encryption_key).hex()
MODES = {
    ContentSecurity.PRIVATE: [],
    ContentSecurity.SIGNED: ["--signed"],
    ContentSecurity.SIGNED_ACTIX: ["--signed-actix"],
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``sessionware argv...``."""
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = int(exc.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def cookie_state(state: dict[str, Any], **meta: float) -> str:
    return encode_state(state, **meta)


# -- help and keygen -------------------------------------------------------------------------


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for command in ("keygen", "decode", "clear-expired", "demo"):
        assert command in out
    for command, option in [("decode", "--signed-actix"), ("clear-expired", "--batch-size")]:
        status, out, _ = run(capsys, command, "--help")
        assert status == 0 and option in out


def test_the_installed_console_script_runs() -> None:
    script = Path(sys.executable).parent / "sessionware"
    if not script.exists():
        pytest.skip(f"no console script at {script}: sessionware is not installed in this venv")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0 and "clear-expired" in result.stdout


def test_keygen_prints_a_fresh_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = run(capsys, "keygen")
    _, second, _ = run(capsys, "keygen")
    assert len(first.strip()) == 128 and first != second
    assert Key.from_hex(first) != Key.from_hex(second)


# -- decode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("security", list(MODES), ids=lambda s: s.name.lower())
def test_decode_opens_each_mode(
    capsys: pytest.CaptureFixture[str], security: ContentSecurity
) -> None:
    state = {"user": "ada", "cart": [{"sku": "a-1", "qty": 2}]}
    sealed = seal(security, KEY, "id", cookie_state(state, created=1.7e9, expires=4.1e9))
    status, out, err = run(capsys, "decode", sealed, "--key", HEX, *MODES[security])
    assert status == 0 and json.loads(out) == state
    assert err == "created 2023-11-14T22:13:20+00:00; expires 2099-12-03T16:53:20+00:00\n"


def test_decode_takes_what_a_browser_shows(capsys: pytest.CaptureFixture[str]) -> None:
    sealed = seal(ContentSecurity.PRIVATE, KEY, "sid", cookie_state({"a": 1}))
    encoded = sealed.replace("/", "%2F").replace("=", "%3D").replace("+", "%2B")
    for pasted in (encoded, f"sid={encoded}", f"Set-Cookie: sid={encoded}; HttpOnly; Path=/"):
        status, out, _ = run(capsys, "decode", pasted, "--key", HEX, "--name", "sid")
        assert status == 0 and json.loads(out) == {"a": 1}


def test_decode_tries_every_key_given(capsys: pytest.CaptureFixture[str]) -> None:
    sealed = seal(ContentSecurity.PRIVATE, KEY, "id", cookie_state({"a": 1}))
    new = (lambda k: (k.signing_key + k.encryption_key).hex())(Key.generate())
    status, out, _ = run(capsys, "decode", sealed, "--key", new, "--key", HEX)
    assert status == 0 and json.loads(out) == {"a": 1}


def test_decode_notes_an_expired_cookie(capsys: pytest.CaptureFixture[str]) -> None:
    sealed = seal(ContentSecurity.PRIVATE, KEY, "id", cookie_state({"a": 1}, expires=1.0e9))
    status, _, err = run(capsys, "decode", sealed, "--key", HEX)
    assert status == 0 and "(expired: the middleware would ignore it)" in err


def test_decode_says_a_server_side_key_is_one(capsys: pytest.CaptureFixture[str]) -> None:
    session_key = generate_session_key()
    sealed = seal(ContentSecurity.PRIVATE, KEY, "id", session_key)
    status, out, err = run(capsys, "decode", sealed, "--key", HEX)
    assert (status, out) == (1, "")
    assert "this is a server-side session key; look it up in the store" in err
    assert f"GET session:{session_key}" in err


OTHER_HEX = (Key.generate().signing_key * 2).hex()


@pytest.mark.parametrize(
    ("cookie", "options", "reason"),
    [
        ("", [], "the cookie is empty: a removal cookie"),
        ("not*base64", [], "not base64: a private cookie is standard base64"),
        ("YWJj", [], "too short for a private cookie: 3 bytes, at least 28"),
        ("x" * 5000, [], "the cookie is 5000 characters, over the 4096"),
        ("short", ["--signed"], "not base64: a signed cookie starts with a 44-character"),
        (
            seal(ContentSecurity.PRIVATE, KEY, "id", "{}"),
            ["--key", OTHER_HEX],
            "authentication failed: the cookie was not sealed private (the default) with this"
            " key, not named 'id' (--name)",
        ),
        (
            seal(ContentSecurity.PRIVATE, KEY, "other", "{}"),
            [],
            "authentication failed",
        ),
        (
            seal(ContentSecurity.SIGNED_ACTIX, KEY, "id", "{}"),
            ["--signed"],
            "authentication failed: the cookie was not sealed --signed with this key",
        ),
        (
            seal(ContentSecurity.SIGNED_ACTIX, KEY, "id", "{}"),
            ["--signed-actix", "--key", OTHER_HEX],
            "authentication failed: the cookie was not sealed --signed-actix with this key, or it"
            " was altered",
        ),
        (
            seal(ContentSecurity.PRIVATE, KEY, "id", "hello"),
            [],
            "not a session state: session state is not valid JSON",
        ),
        (
            seal(ContentSecurity.PRIVATE, KEY, "id", "[1, 2]"),
            [],
            "not a session state: session state is not a JSON object",
        ),
        ("%ff%fe", [], "not a cookie value: its %-escapes are not UTF-8"),
    ],
)
def test_decode_says_exactly_why_a_cookie_does_not_open(
    capsys: pytest.CaptureFixture[str], cookie: str, options: list[str], reason: str
) -> None:
    keys = [] if "--key" in options else ["--key", HEX]
    status, out, err = run(capsys, "decode", cookie, *keys, *options)
    assert (status, out) == (1, "")
    assert err.startswith(f"sessionware decode: {reason}"), err


def test_decode_refuses_a_bad_hex_key(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "decode", "abc", "--key", "00ff")
    assert status == 2 and "argument --key: bad hex key: Key.from_hex needs exactly 128" in err
    status, _, err = run(capsys, "decode", "abc", "--key", HEX, "--signed", "--signed-actix")
    assert status == 2 and "not allowed with argument" in err


# -- clear-expired ---------------------------------------------------------------------------


async def fill_sqlite(path: Path, expired: int, live: int) -> list[str]:
    """``expired`` records (each in the user index) written long ago with a minute to live, and
    ``live`` fresh ones."""
    past = SQLiteSessionStore(path, clock=lambda: 1_000_000.0)
    for n in range(expired):
        await past.put(f"old{n}", b"{}", timedelta(minutes=1), expect=ABSENT)
        await past.index_add("ferris", f"old{n}", timedelta(minutes=1))
    await past.aclose()
    now = SQLiteSessionStore(path)
    keys = [f"new{n}" for n in range(live)]
    for key in keys:
        await now.put(key, b"{}", timedelta(hours=1), expect=ABSENT)
    await now.aclose()
    return keys


def test_clear_expired_sqlite_in_batches_with_progress(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "a dir?#%").mkdir()
    path = tmp_path / "a dir?#%" / "sessions.db"
    live = asyncio.run(fill_sqlite(path, expired=7, live=2))
    status, out, err = run(
        capsys, "clear-expired", "--store", f"sqlite:///{path}", "--batch-size", "3"
    )
    assert (status, out) == (0, "deleted 7 expired sessions\n")
    assert err.splitlines() == [
        "clear-expired: 3 of 7 rows deleted (42%)",
        "clear-expired: 6 of 7 rows deleted (85%)",
        "clear-expired: 7 of 7 rows deleted (100%)",
    ]
    with sqlite3.connect(path) as conn:
        left = {row[0] for row in conn.execute("SELECT key FROM sessions")}
        indexed = conn.execute("SELECT count(*) FROM sessions_users").fetchone()[0]
    assert left == set(live) and indexed == 0
    status, out, err = run(capsys, "clear-expired", "--store", f"sqlite:///{path}")
    assert (status, out, err) == (0, "deleted 0 expired sessions\n", "")


def test_clear_expired_sqlite_on_a_first_version_table_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE sessions (key TEXT PRIMARY KEY, data TEXT, successor TEXT,"
            " expires REAL NOT NULL, user_id TEXT)"
        )
        conn.execute("INSERT INTO sessions VALUES ('gone', NULL, NULL, 0, NULL)")
    conn.close()
    status, out, err = run(capsys, "clear-expired", "--store", f"sqlite:///{path}")
    assert (status, out, err) == (0, "deleted 1 expired sessions\n", "")
    with sqlite3.connect(path) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
    conn.close()
    assert tables == ["sessions"]


def test_clear_expired_sqlite_relative_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(fill_sqlite(tmp_path / "s.db", expired=2, live=0))
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "clear-expired", "--store", "sqlite:///s.db")
    assert (status, out, err) == (0, "deleted 2 expired sessions\n", "")


@pytest.mark.parametrize(
    ("store", "options", "message"),
    [
        ("sqlite:///{tmp}/missing.db", [], "no SQLite file at"),
        ("sqlite:///{tmp}/empty.db", [], "SQLite: no such table: sessions"),
        ("sqlite:///{tmp}/empty.db", ["--table", "x;drop"], "is not a plain SQL identifier"),
        ("sqlite://x.db", [], "write a SQLite store as sqlite:///path"),
        ("mongodb://x", [], "unknown store 'mongodb://x'"),
    ],
)
def test_clear_expired_explains_what_is_wrong(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    store: str,
    options: list[str],
    message: str,
) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()
    status, out, err = run(capsys, "clear-expired", "--store", store.format(tmp=tmp_path), *options)
    assert (status, out) == (1, "")
    assert err.startswith("sessionware clear-expired: ") and message in err


def test_clear_expired_on_redis_has_nothing_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "clear-expired", "--store", "redis://127.0.0.1:6379/0")
    assert (status, out) == (0, "deleted 0 expired sessions\n")
    assert "Redis expires sessions by itself" in err


def test_clear_expired_batch_size_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "clear-expired", "--store", "sqlite:///x", "--batch-size", "0")
    assert status == 2 and "'0' is not a positive whole number" in err


DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.mark.postgres
def test_clear_expired_postgres(capsys: pytest.CaptureFixture[str]) -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg  # type: ignore[import-untyped]

    from sessionware.stores.postgres import PostgresSessionStore

    table = f"sessionware_cli_{uuid.uuid4().hex}"

    async def setup() -> list[str]:
        store = PostgresSessionStore.from_dsn(DSN, table=table)
        keys = [f"k{n}" for n in range(5)]
        for key in keys:
            await store.put(key, b"{}", timedelta(hours=1), expect=ABSENT)
            await store.index_add("ferris", key, timedelta(hours=1))
        await store.aclose()
        conn = await asyncpg.connect(DSN)
        try:  # age three of them past their expiry
            for name in (table, f"{table}_users"):
                await conn.execute(
                    f"UPDATE {name} SET expires = now() - interval '1 hour' WHERE key = ANY($1)",
                    keys[:3],
                )
        finally:
            await conn.close()
        return keys

    async def remaining_and_drop() -> tuple[set[str], set[str]]:
        conn = await asyncpg.connect(DSN)
        try:
            rows = await conn.fetch(f"SELECT key FROM {table}")
            indexed = await conn.fetch(f"SELECT key FROM {table}_users")
            await conn.execute(f"DROP TABLE {table}, {table}_users")
        finally:
            await conn.close()
        return {row["key"] for row in rows}, {row["key"] for row in indexed}

    keys = asyncio.run(setup())
    try:
        status, out, err = run(
            capsys, "clear-expired", "--store", DSN, "--table", table, "--batch-size", "2"
        )
    finally:
        left = asyncio.run(remaining_and_drop())
    assert (status, out) == (0, "deleted 3 expired sessions\n")
    assert err.splitlines()[-1] == "clear-expired: 3 of 3 rows deleted (100%)"
    assert left == (set(keys[3:]), set(keys[3:]))
    status, _, err = run(capsys, "clear-expired", "--store", DSN, "--table", table)
    assert status == 1 and "does not exist" in err


# -- demo ------------------------------------------------------------------------------------


def test_demo_reports_a_bad_store_without_serving(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run(capsys, "demo", "--store", "bogus", "--data-dir", str(tmp_path))
    assert (status, out) == (1, "")
    assert "unknown store 'bogus': use sqlite, memory or a redis:// URL" in err


def test_demo_without_its_extras_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sessionware.demo", None)  # as if Starlette were missing
    status, _, err = run(capsys, "demo", "--store", "bogus")  # never serves, whatever happens
    assert status == 1 and err.startswith("sessionware demo: import of sessionware.demo halted")
