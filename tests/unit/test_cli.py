"""The ``sessionware`` command, called as ``main([...])`` with captured output."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sessionware import ContentSecurity, Key, SessionwareError
from sessionware.cli import main
from sessionware.crypto import seal
from sessionware.repository import Repository
from sessionware.state import encode_state
from sessionware.stores import MemorySessionStore, generate_session_key
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


@pytest.mark.parametrize("dashes", ["-", "--"])
def test_decode_takes_a_signed_value_that_starts_with_a_dash(
    capsys: pytest.CaptureFixture[str], dashes: str
) -> None:
    """A SIGNED cookie's base64url MAC may start with "-" (1 in 32 keys and states): it is the
    cookie, wherever it stands among the options, not an option argparse does not know."""
    sealed = next(
        s
        for n in range(100_000)
        if (s := seal(ContentSecurity.SIGNED, KEY, "id", cookie_state({"n": n})))[:3].count("-")
        == len(dashes)
        and s.startswith(dashes)
    )
    for args in (
        (sealed, "--key", HEX, "--signed"),
        ("--key", HEX, sealed, "--signed"),
        ("--signed", "--key", HEX, sealed),
    ):
        status, out, err = run(capsys, "decode", *args)
        assert status == 0 and "n" in json.loads(out), (args, err)


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


def test_decode_prints_a_server_side_key_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16 item 12: it worked, so the status is 0; the lookup uses the store's prefix.
    Issue 24: what it prints is the id the record is filed under (the key's SHA-256 by
    default), never the key itself, which is a bearer secret."""
    session_key = generate_session_key()
    filed = Repository(MemorySessionStore()).id_of(session_key)
    sealed = seal(ContentSecurity.PRIVATE, KEY, "id", session_key)
    status, out, err = run(capsys, "decode", sealed, "--key", HEX)
    assert (status, out) == (0, f"{filed}\n")
    assert filed == hashlib.sha256(session_key.encode()).hexdigest()
    assert "a server-side session: the state is in the store" in err
    assert f"GET session:{filed}" in err and session_key not in err
    status, out, err = run(capsys, "decode", sealed, "--key", HEX, "--key-prefix", "app1:")
    assert (status, out) == (0, f"{filed}\n")
    assert f"GET app1:{filed}" in err and "GET session:" not in err
    status, out, err = run(capsys, "decode", sealed, "--key", HEX, "--key-prefix", "")
    assert status == 0 and f"GET {filed} " in err  # actix's default: no prefix


def test_decode_without_hashed_keys_prints_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    session_key = generate_session_key()
    sealed = seal(ContentSecurity.PRIVATE, KEY, "id", session_key)
    status, out, err = run(capsys, "decode", sealed, "--key", HEX, "--no-hash-keys")
    assert (status, out) == (0, f"{session_key}\n")
    assert Repository(MemorySessionStore(hash_keys=False)).id_of(session_key) == session_key
    assert "filed under its key (hash_keys=False)" in err


def test_decode_error_is_a_sessionware_error() -> None:
    """Issue 24: one exception tree; the CLI's decode error is under ``SessionwareError``."""
    from sessionware.cli import DecodeError, decode_cookie

    assert issubclass(DecodeError, SessionwareError) and issubclass(DecodeError, ValueError)
    with pytest.raises(SessionwareError, match="not base64"):
        decode_cookie("not*base64", [KEY])


def test_decode_cookie_still_refuses_a_server_side_key() -> None:
    from sessionware.cli import DecodeError, decode_cookie

    sealed = seal(ContentSecurity.PRIVATE, KEY, "id", generate_session_key())
    with pytest.raises(DecodeError, match="server-side session key, not a state"):
        decode_cookie(sealed, [KEY])


def test_decode_finds_the_session_cookie_in_a_cookie_header(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 16 item 12: ``foo=bar; id=<cookie>`` said "not base64"."""
    from urllib.parse import quote

    sealed = seal(ContentSecurity.PRIVATE, KEY, "id", cookie_state({"a": 1}))
    for pasted in (
        f"foo=bar; id={sealed}",
        f"Cookie: foo=bar; id={quote(sealed, safe='')}; theme=dark",
        f"Set-Cookie: id={quote(sealed, safe='')}; HttpOnly; SameSite=Lax; Path=/",
    ):
        status, out, err = run(capsys, "decode", pasted, "--key", HEX)
        assert status == 0, err
        assert json.loads(out) == {"a": 1}
    named = seal(ContentSecurity.PRIVATE, KEY, "sid", cookie_state({"b": 2}))
    status, out, _ = run(capsys, "decode", f"foo=bar; sid={named}", "--key", HEX, "--name", "sid")
    assert status == 0 and json.loads(out) == {"b": 2}


@pytest.mark.parametrize(
    "pasted",
    ["foo=bar; sid=SEALED", "Set-Cookie: sid=SEALED; Path=/; HttpOnly", "sid=SEALED"],
)
def test_decode_names_the_cookie_name_problem(
    capsys: pytest.CaptureFixture[str], pasted: str
) -> None:
    sealed = seal(ContentSecurity.PRIVATE, KEY, "sid", cookie_state({"a": 1}))
    status, out, err = run(capsys, "decode", pasted.replace("SEALED", sealed), "--key", HEX)
    assert (status, out) == (1, "")
    assert "no cookie named 'id' in the input, which holds cookies named" in err
    assert "'sid'" in err and "--name" in err and "'path'" not in err.lower()


def test_decode_opens_a_starlette_drop_in_cookie_with_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 16 item 12: the drop-in derives its key from ``secret_key``; ``--secret`` does too."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from sessionware.integrations.starlette import SessionMiddleware as DropIn
    from tests.client import request

    secret, old = "a long random secret for the drop-in test, 48 bytes", "x" * 40

    async def write(req: Request) -> JSONResponse:
        req.session["cart"] = ["apple"]
        return JSONResponse({})

    for secret_key, fallbacks in ((secret, []), (old, [])):
        app = Starlette(
            routes=[Route("/", write)],
            middleware=[Middleware(DropIn, secret_key=secret_key, fallback_secret_keys=fallbacks)],
        )
        response = asyncio.run(request(app, "GET", "/"))
        line = response.set_cookies[0].line
        status, out, err = run(capsys, "decode", line, "--secret", secret, "--secret", old)
        assert status == 0, err
        assert json.loads(out) == {"cart": ["apple"]}
    status, _, err = run(capsys, "decode", line, "--secret", "some other secret, long enough")
    assert status == 1 and "authentication failed" in err and "'session'" in err


def test_decode_needs_a_key_or_a_secret(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "decode", "abc")
    assert status == 2 and "--key HEX" in err and "--secret TEXT" in err


OTHER_HEX = (Key.generate().signing_key * 2).hex()


@pytest.mark.parametrize(
    ("cookie", "options", "reason"),
    [
        ("", [], "the cookie is empty: a removal cookie"),
        ("not*base64", [], "not base64: a private cookie is standard base64"),
        ("YWJj", [], "too short for a private cookie: 3 bytes, at least 28"),
        ("x" * 5000, [], "the cookie is 5000 characters, over the 4096"),
        ("short", ["--signed"], "not base64url: a signed cookie is a 43-character"),
        ("short", ["--signed-actix"], "not base64: a signed cookie starts with a 44-character"),
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
    with pytest.warns(DeprecationWarning, match="clock"):  # a store's TTL, set long ago
        past = SQLiteSessionStore(path, clock=lambda: 1_000_000.0)
    for n in range(expired):
        await past.put(f"old{n}", b"{}", timedelta(minutes=1), expect=ABSENT)
        await past.index_add(f"user{n}", f"old{n}", timedelta(minutes=1))
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
    assert (status, out) == (0, "deleted 14 expired rows (sessions and user-index entries)\n")
    assert err.splitlines() == [  # records 3 + 3 + 1, then the index's entries 3 + 3 + 1
        f"clear-expired: {n} rows deleted so far" for n in (3, 6, 7, 10, 13, 14)
    ]
    with sqlite3.connect(path) as conn:
        left = {row[0] for row in conn.execute("SELECT key FROM sessions")}
        indexed = conn.execute("SELECT count(*) FROM sessions_users").fetchone()[0]
    assert left == set(live) and indexed == 0
    status, out, err = run(capsys, "clear-expired", "--store", f"sqlite:///{path}")
    assert (status, out, err) == (
        0,
        "deleted 0 expired rows (sessions and user-index entries)\n",
        "",
    )


def test_clear_expired_runs_the_stores_own_clear_expired(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: the command has no SQL of its own for deleting; it calls the store."""
    asyncio.run(fill_sqlite(tmp_path / "s.db", expired=2, live=1))
    calls: list[dict[str, Any]] = []
    original = SQLiteSessionStore.clear_expired

    async def spy(self: SQLiteSessionStore, **options: Any) -> int:
        calls.append(options)
        return await original(self, **options)

    monkeypatch.setattr(SQLiteSessionStore, "clear_expired", spy)
    status, out, _ = run(
        capsys, "clear-expired", "--store", f"sqlite:///{tmp_path}/s.db", "--batch-size", "7"
    )
    assert (status, out) == (0, "deleted 4 expired rows (sessions and user-index entries)\n")
    assert [call["batch_size"] for call in calls] == [7]


def test_clear_expired_sqlite_never_changes_a_first_version_table(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A 0.1 table may still be in use by the old version: the command neither upgrades it
    (the store would) nor creates tables beside it; it says what to do."""
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE sessions (key TEXT PRIMARY KEY, data TEXT, successor TEXT,"
            " expires REAL NOT NULL, user_id TEXT)"
        )
        conn.execute("INSERT INTO sessions VALUES ('gone', NULL, NULL, 0, NULL)")
    conn.close()
    status, out, err = run(capsys, "clear-expired", "--store", f"sqlite:///{path}")
    assert (status, out) == (1, "")
    assert "'sessions' is a sessionware 0.1 table" in err and "never changes a table" in err
    with sqlite3.connect(path) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sessions)")]
        rows = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
    conn.close()
    assert (tables, rows) == (["sessions"], 1)
    assert columns == ["key", "data", "successor", "expires", "user_id"]


def test_clear_expired_sqlite_relative_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(fill_sqlite(tmp_path / "s.db", expired=2, live=0))
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "clear-expired", "--store", "sqlite:///s.db")
    assert (status, out, err) == (
        0,
        "deleted 4 expired rows (sessions and user-index entries)\n",
        "",
    )


@pytest.mark.parametrize(
    ("store", "options", "message"),
    [
        ("sqlite:///{tmp}/missing.db", [], "no SQLite file at"),
        ("sqlite:///{tmp}/empty.db", [], "SQLite: no table 'sessions' here: pass --table"),
        ("sqlite:///{tmp}/empty.db", ["--table", "x;drop"], "must be a plain SQL identifier"),
        ("sqlite://x.db", [], "write a SQLite store as sqlite:///relative/path"),
        ("mongodb://x", [], "unknown store 'mongodb://x': use sqlite:///"),
        ("postgresql://x", ["--table", "a b"], "table name 'a b' must be an SQL identifier"),
        ("mysql://root@127.0.0.1", [], "the DSN must look like mysql://user:password@host"),
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
    assert err.startswith("sessionware clear-expired: ") and message in err, err
    if "empty.db" in store:
        assert (tmp_path / "empty.db").stat().st_size == 0  # the store created nothing there


def test_clear_expired_on_redis_has_nothing_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 16 item 12: "nothing to do" on stdout, nothing on stderr, status 0."""
    for url in ("redis://127.0.0.1:6379/0", "rediss://example.com", "unix:///tmp/redis.sock"):
        status, out, err = run(capsys, "clear-expired", "--store", url)
        assert (status, err) == (0, "")
        assert out.startswith("nothing to do: Redis expires sessions by itself"), out


def test_clear_expired_batch_size_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "clear-expired", "--store", "sqlite:///x", "--batch-size", "0")
    assert status == 2 and "'0' is not a positive whole number" in err


DSN = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL_DSN = "mysql://root@127.0.0.1:3306/test"


@pytest.mark.postgres
def test_clear_expired_postgres_missing_table_gets_a_hint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 16 item 12: a table that does not exist says what to pass (and is not created)."""
    require("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg  # type: ignore[import-untyped]

    table = f"sessionware_cli_missing_{uuid.uuid4().hex}"
    status, out, err = run(capsys, "clear-expired", "--store", DSN, "--table", table)
    assert (status, out) == (1, "")
    assert f"PostgreSQL: no table '{table}' here: pass --table" in err
    assert "sessionware_sessions" in err

    async def exists() -> bool:
        conn = await asyncpg.connect(DSN)
        try:
            return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table))
        finally:
            await conn.close()

    assert asyncio.run(exists()) is False


@pytest.mark.postgres
def test_clear_expired_postgres(capsys: pytest.CaptureFixture[str]) -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    import asyncpg

    from sessionware.stores.postgres import PostgresSessionStore

    table = f"sessionware_cli_{uuid.uuid4().hex}"

    async def setup() -> list[str]:
        store = PostgresSessionStore.from_dsn(DSN, table=table)
        keys = [f"k{n}" for n in range(5)]
        for key in keys:
            await store.put(key, b"{}", timedelta(hours=1), expect=ABSENT)
            await store.index_add(f"user-{key}", key, timedelta(hours=1))
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
    assert (status, out) == (0, "deleted 6 expired rows (sessions and user-index entries)\n")
    assert err.splitlines()[-1] == "clear-expired: 6 rows deleted so far"
    assert left == (set(keys[3:]), set(keys[3:]))
    status, _, err = run(capsys, "clear-expired", "--store", DSN, "--table", table)
    assert status == 1 and f"no table '{table}' here" in err


@pytest.mark.mysql
@pytest.mark.parametrize("scheme", ["mysql", "mariadb"])
def test_clear_expired_mysql(capsys: pytest.CaptureFixture[str], scheme: str) -> None:
    """Issue 28 item 14: the command lacked MySQL/MariaDB."""
    require("MariaDB", "127.0.0.1", 3306)
    import asyncmy

    from sessionware.stores.mysql import MySQLSessionStore

    table = f"sessionware_cli_{uuid.uuid4().hex[:24]}"
    dsn = MYSQL_DSN.replace("mysql:", f"{scheme}:")

    async def sql(statement: str, *args: Any) -> list[Any]:
        conn = await asyncmy.connect(host="127.0.0.1", user="root", db="test", autocommit=True)
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(statement.format(t=table), args)
                return list(await cursor.fetchall())
        finally:
            conn.close()

    async def setup() -> None:
        store = MySQLSessionStore.from_dsn(MYSQL_DSN, table=table)
        for key in ("old1", "old2", "live"):
            await store.put(key, b"{}", timedelta(hours=1), expect=ABSENT)
            await store.index_add(f"user-{key}", key, timedelta(hours=1))
        await store.aclose()
        await sql("UPDATE {t} SET expires = '2000-01-01' WHERE `key` LIKE 'old%%'")
        await sql("UPDATE {t}_users SET expires = '2000-01-01' WHERE id = 'old1'")

    asyncio.run(setup())
    try:
        status, out, err = run(capsys, "clear-expired", "--store", dsn, "--table", table)
        assert (status, out, err) == (
            0,
            "deleted 3 expired rows (sessions and user-index entries)\n",
            "",
        )
        assert asyncio.run(sql("SELECT `key` FROM {t}")) == [("live",)]
        assert sorted(asyncio.run(sql("SELECT id FROM {t}_users"))) == [("live",), ("old2",)]
    finally:
        asyncio.run(sql("DROP TABLE IF EXISTS {t}, {t}_users"))
    status, out, err = run(capsys, "clear-expired", "--store", dsn, "--table", table)
    assert (status, out) == (1, "")
    assert f"MySQL/MariaDB: no table '{table}' here: pass --table" in err


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


def test_a_signed_cookie_whose_mac_looks_like_a_name_is_not_taken_for_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A signed value is ``<43 base64 chars>=<json>``: that is no cookie called the MAC."""
    sealed = next(
        s
        for n in range(10_000)
        if "/" not in (s := seal(ContentSecurity.SIGNED, KEY, "id", cookie_state({"n": n})))[:43]
    )
    # "--": a base64url value may start with "-", which argparse would take for an option.
    status, out, err = run(capsys, "decode", "--key", OTHER_HEX, "--signed", "--", sealed)
    assert (status, out) == (1, "")
    assert err.startswith("sessionware decode: authentication failed"), err
    status, out, _ = run(capsys, "decode", "--key", HEX, "--signed", "--", sealed)
    assert status == 0 and "n" in json.loads(out)
