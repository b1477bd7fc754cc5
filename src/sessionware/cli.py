"""The ``sessionware`` command: make keys, open cookies, clear expired sessions, run the demo.

Exit status: 0 done, 1 the task failed (a cookie that does not open, a store that cannot be
reached), 2 a usage error (argparse's, and a malformed ``--key``). Results go to stdout;
explanations and progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import importlib
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote

from sessionware import __version__
from sessionware.crypto import ContentSecurity, Key, unseal
from sessionware.state import DeserializationError, StoredState, decode_state
from sessionware.stores.base import is_generated_key

__all__ = ["DecodeError", "decode_cookie", "main"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_SQLITE_TABLE = re.compile(_NAME)
_POSTGRES_TABLE = re.compile(rf"(?:{_NAME}\.)?{_NAME}")
_MAX_COOKIE = 4096
_MAC_B64 = 44  # a base64 HMAC-SHA256, at the start of a signed cookie
_MIN_PRIVATE = 28  # nonce (12) and tag (16) of a private cookie


class DecodeError(ValueError):
    """Why a cookie value does not open into a session state (the message says it exactly)."""


# -- keygen ----------------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    key = Key.generate()
    print((key.signing_key + key.encryption_key).hex())
    return 0


# -- decode ----------------------------------------------------------------------------------


def _hex_key(text: str) -> Key:
    try:
        return Key.from_hex(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad hex key: {exc}") from None


def _b64(text: str) -> bytes | None:
    """Canonical padded standard base64 only, as the cookie crypto reads it."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return data if base64.b64encode(data).decode("ascii") == text else None


def _clean(cookie: str, name: str) -> str:
    """The sealed value from what a user pasted: the value, ``name=value`` or a Set-Cookie line."""
    text = cookie.strip()
    if text.lower().startswith("set-cookie:"):
        text = text[len("set-cookie:") :].strip()
    text = text.split(";", 1)[0].strip()
    if text.startswith(name + "="):
        text = text[len(name) + 1 :]
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if "%" in text:
        try:
            text = unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise DecodeError("not a cookie value: its %-escapes are not UTF-8") from None
    return text


def decode_cookie(
    cookie: str,
    keys: Sequence[Key],
    *,
    security: ContentSecurity = ContentSecurity.PRIVATE,
    name: str = "id",
) -> StoredState:
    """Open a session cookie and parse the state it carries, or raise ``DecodeError`` saying why.

    ``cookie`` may be the bare value (%-encoded or not), ``name=value`` or a Set-Cookie line.
    """
    value = _clean(cookie, name)
    mode = {
        ContentSecurity.PRIVATE: "private (the default)",
        ContentSecurity.SIGNED: "--signed",
        ContentSecurity.SIGNED_ACTIX: "--signed-actix",
    }[security]
    if not value:
        raise DecodeError("the cookie is empty: a removal cookie, sent when a session is purged")
    if len(value) > _MAX_COOKIE:
        raise DecodeError(f"the cookie is {len(value)} characters, over the 4096 browsers keep")
    if security is ContentSecurity.PRIVATE:
        blob = _b64(value)
        if blob is None:
            raise DecodeError(
                "not base64: a private cookie is standard base64 of nonce, ciphertext and tag"
                " (a signed cookie? try --signed or --signed-actix)"
            )
        if len(blob) < _MIN_PRIVATE:
            raise DecodeError(
                f"too short for a private cookie: {len(blob)} bytes, at least {_MIN_PRIVATE}"
            )
    else:
        if len(value) < _MAC_B64 or _b64(value[:_MAC_B64]) is None:
            raise DecodeError(
                "not base64: a signed cookie starts with a 44-character base64 HMAC"
                " (a private cookie? leave out --signed/--signed-actix)"
            )
    opened = unseal(security, keys, name, value)
    if opened is None:
        bound = "" if security is ContentSecurity.SIGNED_ACTIX else f", not named {name!r} (--name)"
        raise DecodeError(
            f"authentication failed: the cookie was not sealed {mode} with this key{bound}, or"
            " it was altered"
        )
    plain = opened[0]
    if is_generated_key(plain):
        raise DecodeError(
            "this is a server-side session key; look it up in the store (Redis: GET"
            f" session:{plain}; SQL: WHERE key = '{plain}')"
        )
    try:
        return decode_state(plain)
    except DeserializationError as exc:
        raise DecodeError(f"not a session state: {exc}") from None


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")


def _decode(args: argparse.Namespace) -> int:
    security = args.security or ContentSecurity.PRIVATE
    try:
        state = decode_cookie(args.cookie, args.key, security=security, name=args.name)
    except DecodeError as exc:
        print(f"sessionware decode: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(dict(state), indent=2, ensure_ascii=False, sort_keys=True))
    notes = []
    if state.created is not None:
        notes.append(f"created {_when(state.created)}")
    if state.expires is not None:
        past = " (expired: the middleware would ignore it)" if state.expires <= time.time() else ""
        notes.append(f"expires {_when(state.expires)}{past}")
    if notes:
        print("; ".join(notes), file=sys.stderr)
    return 0


# -- clear-expired ---------------------------------------------------------------------------


class _Progress:
    """Deleted-so-far on stderr: one rewritten line on a terminal, a line per batch otherwise."""

    def __init__(self, total: int, batch: int, out: TextIO) -> None:
        self.total, self.out = total, out
        self.shown = total > batch
        self.tty = out.isatty()

    def update(self, done: int) -> None:
        if not self.shown:
            return
        percent = min(100, 100 * done // self.total) if self.total else 100
        line = f"clear-expired: {done:,} of {self.total:,} rows deleted ({percent}%)"
        self.out.write(f"\r{line}" if self.tty else f"{line}\n")
        self.out.flush()

    def close(self) -> None:
        if self.shown and self.tty:
            self.out.write("\n")


async def _run_batches(
    count: Callable[[], Awaitable[int]], delete: Callable[[], Awaitable[int]], batch: int
) -> int:
    """Delete ``batch`` rows at a time until a batch comes up short; return how many went."""
    progress = _Progress(await count(), batch, sys.stderr)
    done = 0
    try:
        while True:
            deleted = await delete()
            done += deleted
            progress.update(done)
            if deleted < batch:
                return done
    finally:
        progress.close()


def _clear_sqlite(location: str, table: str, batch: int) -> int:
    path = location[len("sqlite:///") :]
    if not path or not os.path.isfile(path):
        raise RuntimeError(
            f"no SQLite file at {path!r} (sqlite:///relative/path or sqlite:////absolute/path)"
        )
    if not _SQLITE_TABLE.fullmatch(table):
        raise RuntimeError(f"table name {table!r} is not a plain SQL identifier")
    now = time.time()
    uri = Path(path).absolute().as_uri() + "?mode=rw"  # never creates a file
    conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
    # The table name is a checked identifier: the only text formatted into SQL.
    count_sql = f"SELECT count(*) FROM {table} WHERE expires <= ?"  # noqa: S608
    delete_sql = (
        f"DELETE FROM {table} WHERE key IN"  # noqa: S608
        f" (SELECT key FROM {table} WHERE expires <= ? LIMIT ?)"
    )

    # sqlite3 is synchronous; wrapping its calls lets one batch loop serve both databases.
    async def count() -> int:
        return int(conn.execute(count_sql, (now,)).fetchone()[0])

    async def delete() -> int:
        return conn.execute(delete_sql, (now, batch)).rowcount

    index = f"{table}_users"
    index_sql = (
        f"DELETE FROM {index} WHERE (user_id, key) IN"  # noqa: S608
        f" (SELECT user_id, key FROM {index} WHERE expires <= ? LIMIT ?)"
    )
    try:
        deleted = asyncio.run(_run_batches(count, delete, batch))
        # Then the user index's expired entries, not counted as sessions (a v1 table has none).
        if conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (index,)
        ).fetchone():
            while conn.execute(index_sql, (now, batch)).rowcount == batch:
                pass
        return deleted
    except sqlite3.Error as exc:
        raise RuntimeError(f"SQLite: {exc}") from exc
    finally:
        conn.close()


async def _clear_postgres(dsn: str, table: str, batch: int) -> int:
    if not _POSTGRES_TABLE.fullmatch(table):
        raise RuntimeError(f"table name {table!r} is not an SQL identifier")
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        raise RuntimeError(
            "PostgreSQL needs asyncpg: pip install 'sessionware[postgres]'"
        ) from None
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, ValueError) as exc:
        raise RuntimeError(f"PostgreSQL: cannot connect: {exc}") from exc
    try:
        now = await conn.fetchval("SELECT clock_timestamp()")
        count_sql = f"SELECT count(*) FROM {table} WHERE expires <= $1"  # noqa: S608
        delete_sql = (
            f"DELETE FROM {table} WHERE key IN"  # noqa: S608
            f" (SELECT key FROM {table} WHERE expires <= $1 LIMIT $2) AND expires <= $1"
        )

        async def count() -> int:
            return int(await conn.fetchval(count_sql, now))

        async def delete() -> int:
            status: str = await conn.execute(delete_sql, now, batch)
            return int(status.split()[-1])

        deleted = await _run_batches(count, delete, batch)
        # Then the user index's expired entries, not counted as sessions (a v1 table has none).
        index = f"{table}_users"
        index_sql = (
            f"DELETE FROM {index} WHERE (user_id, key) IN"  # noqa: S608
            f" (SELECT user_id, key FROM {index} WHERE expires <= $1 LIMIT $2) AND expires <= $1"
        )
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", index):
            while (await conn.execute(index_sql, now, batch)).split()[-1] == str(batch):
                pass
        return deleted
    except asyncpg.PostgresError as exc:
        raise RuntimeError(f"PostgreSQL: {exc}") from exc
    finally:
        await conn.close()


def _clear_expired(args: argparse.Namespace) -> int:
    location: str = args.store
    scheme = location.split(":", 1)[0].lower()
    try:
        if scheme == "sqlite":
            if not location.startswith("sqlite:///"):
                raise RuntimeError("write a SQLite store as sqlite:///path/to/sessions.db")
            table = args.table or "sessions"
            deleted = _clear_sqlite(location, table, args.batch_size)
        elif scheme in ("postgresql", "postgres"):
            table = args.table or "sessionware_sessions"
            deleted = asyncio.run(_clear_postgres(location, table, args.batch_size))
        elif scheme in ("redis", "rediss", "unix"):
            print(
                "Redis expires sessions by itself (every key carries its TTL); nothing to clear",
                file=sys.stderr,
            )
            deleted = 0
        else:
            raise RuntimeError(
                f"unknown store {location!r}: use sqlite:///path or postgresql://user@host/db"
            )
    except RuntimeError as exc:
        print(f"sessionware clear-expired: {exc}", file=sys.stderr)
        return 1
    print(f"deleted {deleted} expired sessions")
    return 0


# -- demo ------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    try:
        demo = importlib.import_module("sessionware.demo")
    except ImportError as exc:
        print(f"sessionware demo: {exc}", file=sys.stderr)
        return 1
    status: int = demo.serve(
        store=args.store, host=args.host, port=args.port, data_dir=args.data_dir
    )
    return status


# -- the parser ------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessionware",
        description="Tools for sessionware, sessions for ASGI apps in actix-session's format.",
    )
    parser.add_argument("--version", action="version", version=f"sessionware {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser(
        "keygen",
        help="print a new random 64-byte key as 128 hex characters",
        description="Print a new random 64-byte key (OS CSPRNG) as 128 hex characters, for"
        " Key.from_hex() or SESSIONWARE_KEY.",
    )
    keygen.set_defaults(run=_keygen)

    decode = commands.add_parser(
        "decode",
        help="open a session cookie and print its state as JSON",
        description="Open a session cookie with the app's key and print the state it carries as"
        " JSON, or say exactly why it does not open.",
    )
    decode.add_argument("cookie", metavar="COOKIE", help="the cookie value, or name=value")
    decode.add_argument(
        "--key",
        required=True,
        action="append",
        type=_hex_key,
        metavar="HEX",
        help="the 128-hex-character key; repeat for old keys still accepted",
    )
    mode = decode.add_mutually_exclusive_group()
    mode.add_argument(
        "--signed",
        dest="security",
        action="store_const",
        const=ContentSecurity.SIGNED,
        help="the cookie is signed (content_security=SIGNED), not private",
    )
    mode.add_argument(
        "--signed-actix",
        dest="security",
        action="store_const",
        const=ContentSecurity.SIGNED_ACTIX,
        help="the cookie is signed as actix-session does (SIGNED_ACTIX)",
    )
    decode.add_argument("--name", default="id", help="the cookie's name (default: id)")
    decode.set_defaults(run=_decode)

    clear = commands.add_parser(
        "clear-expired",
        help="delete expired sessions from a SQLite or PostgreSQL store",
        description="Delete expired sessions and tombstones, in batches, and print how many went."
        " Progress goes to stderr when there is more than one batch.",
    )
    clear.add_argument(
        "--store",
        required=True,
        metavar="URL",
        help="sqlite:///relative/path, sqlite:////absolute/path or postgresql://user@host/db",
    )
    clear.add_argument(
        "--table", help="the table (default: sessions for SQLite, sessionware_sessions for PG)"
    )
    clear.add_argument(
        "--batch-size",
        type=_positive,
        default=10_000,
        metavar="N",
        help="rows deleted per statement, so the app is never locked out long (default: 10000)",
    )
    clear.set_defaults(run=_clear_expired)

    demo = commands.add_parser(
        "demo",
        help="serve a small demo app (needs sessionware[demo])",
        description="Serve a demo app (sign in, counter, cart, flash messages, sign out) on plain"
        " HTTP with uvicorn. Needs: pip install 'sessionware[demo]'.",
    )
    demo.add_argument(
        "--store",
        default="sqlite",
        metavar="STORE",
        help="sqlite (default), memory, or a redis:// URL",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    demo.add_argument("--port", type=_positive, default=8000, help="port (default: 8000)")
    demo.add_argument(
        "--data-dir",
        metavar="DIR",
        help="where the SQLite file and the key live (default: a directory in the system's temp)",
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sessionware`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    args = _parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
