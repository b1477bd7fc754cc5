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
from sessionware.errors import DecodeError
from sessionware.state import DeserializationError, StoredState, decode_state
from sessionware.stores.base import is_generated_key

__all__ = ["DecodeError", "decode_cookie", "main"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_SQLITE_TABLE = re.compile(_NAME)
_POSTGRES_TABLE = re.compile(rf"(?:{_NAME}\.)?{_NAME}")
_MAX_COOKIE = 4096
_MAC_B64 = 44  # a base64 HMAC-SHA256, at the start of a signed cookie
_MIN_PRIVATE = 28  # nonce (12) and tag (16) of a private cookie


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


_COOKIE_NAME = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+)=(?!=*$)")
_ATTRIBUTES = frozenset(
    ("path", "domain", "max-age", "expires", "samesite", "secure", "httponly", "partitioned")
)


def _names(pieces: Sequence[str]) -> list[str]:
    """The cookie names in ``name=value`` pieces, Set-Cookie attributes left out, and so is the
    43 characters before the ``=`` that ends a signed cookie's base64 MAC."""
    names = []
    for piece in pieces:
        found = _COOKIE_NAME.match(piece)
        if found is None or found.group(1).lower() in _ATTRIBUTES:
            continue
        if len(found.group(1)) == _MAC_B64 - 1 and _b64(piece[:_MAC_B64]) is not None:
            continue
        names.append(found.group(1))
    return names


def _pick(cookie: str, name: str) -> tuple[str, list[str]]:
    """The raw value of the cookie ``name`` in what a user pasted, and the other names seen.

    Takes the bare value, ``name=value``, a ``Cookie:`` header (``a=1; id=...``) or a
    ``Set-Cookie:`` line; without a piece called ``name``, the first piece is the value.
    """
    text = cookie.strip()
    for header in ("set-cookie:", "cookie:"):
        if text.lower().startswith(header):
            text = text[len(header) :].strip()
            break
    pieces = [piece.strip(" \t") for piece in text.split(";")]
    for piece in pieces:
        if piece.startswith(name + "="):
            return piece[len(name) + 1 :], []
    return pieces[0], _names(pieces)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if "%" in text:
        try:
            text = unquote(text, errors="strict")
        except UnicodeDecodeError:
            raise DecodeError("not a cookie value: its %-escapes are not UTF-8") from None
    return text


def _open(cookie: str, keys: Sequence[Key], security: ContentSecurity, name: str) -> str:
    """The plaintext a session cookie carries (a state or a server-side key), or ``DecodeError``."""
    raw, others = _pick(cookie, name)
    try:
        return _unseal(_unquote(raw), keys, security, name)
    except DecodeError as exc:
        if not others:
            raise
        listed = ", ".join(repr(n) for n in dict.fromkeys(others))
        raise DecodeError(
            f"no cookie named {name!r} in the input, which holds cookies named {listed}: pass"
            f" --name with the session cookie's name (the first piece did not open: {exc})"
        ) from None


def decode_cookie(
    cookie: str,
    keys: Sequence[Key],
    *,
    security: ContentSecurity = ContentSecurity.PRIVATE,
    name: str = "id",
) -> StoredState:
    """Open a session cookie and parse the state it carries, or raise ``DecodeError`` saying why.

    ``cookie`` may be the bare value (%-encoded or not), ``name=value``, a Cookie header holding
    it among others, or a Set-Cookie line.
    """
    plain = _open(cookie, keys, security, name)
    if is_generated_key(plain):
        raise DecodeError(
            "this is a server-side session key, not a state: look it up in the store"
            f" (the key is {plain})"
        )
    return _state(plain)


def _state(plain: str) -> StoredState:
    try:
        return decode_state(plain)
    except DeserializationError as exc:
        raise DecodeError(f"not a session state: {exc}") from None


def _unseal(value: str, keys: Sequence[Key], security: ContentSecurity, name: str) -> str:
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
    return opened[0]


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")


def _secret_keys(secrets: Sequence[str]) -> list[Key]:
    """The keys the Starlette drop-in derives from its ``secret_key`` values."""
    if not secrets:
        return []
    try:
        from sessionware.integrations.starlette import derive_key
    except ImportError as exc:
        raise DecodeError(f"--secret needs Starlette, as the drop-in does ({exc})") from None
    try:
        return [derive_key(secret) for secret in secrets]
    except ValueError as exc:
        raise DecodeError(f"--secret: {exc}") from None


def _decode(args: argparse.Namespace) -> int:
    security = args.security or ContentSecurity.PRIVATE
    keys: list[Key] = args.key or []
    secrets: list[str] = args.secret or []
    if not keys and not secrets:
        print(
            "sessionware decode: give the app's key with --key HEX, or the Starlette drop-in's"
            " secret_key with --secret TEXT",
            file=sys.stderr,
        )
        return 2
    # The drop-in names its cookie "session", as Starlette does.
    name: str = args.name or ("session" if secrets and not keys else "id")
    try:
        plain = _open(args.cookie, [*keys, *_secret_keys(secrets)], security, name)
        if is_generated_key(plain):
            print(plain)
            prefix: str = args.key_prefix
            print(
                "a server-side session key: the state is in the store. Redis:"
                f" GET {prefix}{plain} (--key-prefix sets the store's key_prefix); SQLite and"
                " PostgreSQL: the row of the store's table whose key is the one printed",
                file=sys.stderr,
            )
            return 0
        state = _state(plain)
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


def _no_table(table: str, default: str) -> str:
    return (
        f"no table {table!r} here: pass --table with the table the store was given (its table="
        f" argument; the default is {default}), or check the database in the URL. The store"
        " creates its table on first use, so a store never used has nothing to clear"
    )


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
    except sqlite3.OperationalError as exc:
        hint = f"; {_no_table(table, 'sessions')}" if "no such table" in str(exc) else ""
        raise RuntimeError(f"SQLite: {exc}{hint}") from exc
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
    except asyncpg.UndefinedTableError as exc:
        raise RuntimeError(
            f"PostgreSQL: {exc}; {_no_table(table, 'sessionware_sessions')}"
        ) from exc
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
            print("nothing to do: Redis expires sessions by itself (every key carries its TTL)")
            return 0
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
    decode.add_argument(
        "cookie",
        metavar="COOKIE",
        help="the cookie value, name=value, a Cookie header holding it, or a Set-Cookie line",
    )
    decode.add_argument(
        "--key",
        action="append",
        type=_hex_key,
        metavar="HEX",
        help="the 128-hex-character key; repeat for old keys still accepted",
    )
    decode.add_argument(
        "--secret",
        action="append",
        metavar="TEXT",
        help="a secret_key of the Starlette drop-in (sessionware.integrations.starlette), instead"
        " of --key; repeat for fallback_secret_keys. The cookie name then defaults to session",
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
    decode.add_argument(
        "--name", help="the cookie's name (default: id; session with --secret alone)"
    )
    decode.add_argument(
        "--key-prefix",
        default="session:",
        metavar="PREFIX",
        help="the Redis store's key_prefix, for the lookup shown with a server-side key"
        " (default: session:)",
    )
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
