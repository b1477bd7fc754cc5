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
import hashlib
import importlib
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from sessionware import __version__
from sessionware.crypto import ContentSecurity, Key, unseal
from sessionware.errors import DecodeError
from sessionware.state import DeserializationError, StoredState, decode_state
from sessionware.stores._maintenance import DEFAULT_BATCH
from sessionware.stores.base import StoreError, is_generated_key

__all__ = ["DecodeError", "decode_cookie", "main"]

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
    elif security is ContentSecurity.SIGNED_ACTIX or value[_MAC_B64 - 1 : _MAC_B64] == "=":
        if len(value) < _MAC_B64 or _b64(value[:_MAC_B64]) is None:
            raise DecodeError(
                "not base64: a signed cookie starts with a 44-character base64 HMAC"
                " (a private cookie? leave out --signed/--signed-actix)"
            )
    elif not re.fullmatch(r"[A-Za-z0-9_-]{43,}", value):
        raise DecodeError(
            "not base64url: a signed cookie is a 43-character base64url HMAC, then the value"
            " in base64url (a private cookie? leave out --signed)"
        )
    opened = unseal(security, keys, name, value)
    if opened is None:
        bound = "" if security is ContentSecurity.SIGNED_ACTIX else f", not named {name!r} (--name)"
        raise DecodeError(
            f"authentication failed: the cookie was not sealed {mode} with this key{bound}, or"
            " it was altered"
        )
    return opened[0]


def _record_id(key: str, hash_keys: bool) -> str:
    """The id a store files the session with ``key`` under: ``Repository.id_of``'s rule
    (tests/unit/test_cli.py holds the two equal)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest() if hash_keys else key


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
            record = _record_id(plain, args.hash_keys)
            print(record)
            how = (
                "its key's SHA-256 (hash_keys=True, the stores' default; --no-hash-keys for a"
                " store built with hash_keys=False)"
                if args.hash_keys
                else "its key (hash_keys=False)"
            )
            print(
                f"a server-side session: the state is in the store, filed under {how}. Redis:"
                f" GET {args.key_prefix}{record} (--key-prefix sets the store's key_prefix);"
                " SQL stores: the row of the store's table whose key is the id printed",
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
    """Rows deleted so far on stderr, once a first full batch shows there is more than one:
    one rewritten line on a terminal, a line per batch otherwise."""

    def __init__(self, batch: int, out: TextIO) -> None:
        self.batch, self.out = batch, out
        self.tty = out.isatty()
        self.shown = False

    def update(self, done: int) -> None:
        if done < self.batch:
            return
        self.shown = True
        line = f"clear-expired: {done:,} rows deleted so far"
        self.out.write(f"\r{line}" if self.tty else f"{line}\n")
        self.out.flush()

    def close(self) -> None:
        if self.shown and self.tty:
            self.out.write("\n")


@dataclass(frozen=True)
class _Kind:
    """A SQL store the command clears: its name, the URL forms it takes, its default table."""

    name: str
    urls: str
    table: str


_SQLITE = _Kind("SQLite", "sqlite:///relative/path or sqlite:////absolute/path", "sessions")
_POSTGRES = _Kind("PostgreSQL", "postgresql://user@host/db", "sessionware_sessions")
_MYSQL = _Kind("MySQL/MariaDB", "mysql://user:password@host/db", "sessionware_sessions")
_KINDS = {
    "sqlite": _SQLITE,
    "postgresql": _POSTGRES,
    "postgres": _POSTGRES,
    "mysql": _MYSQL,
    "mariadb": _MYSQL,
}


def _open_store(kind: _Kind, location: str, table: str) -> Any:
    """The app's own store class for ``location`` (which checks the URL and the table name)."""
    if kind is _SQLITE:
        from sessionware.stores.sqlite import SQLiteSessionStore

        if not location.startswith("sqlite:///"):
            raise ValueError(f"write a SQLite store as {kind.urls}")
        path = location[len("sqlite:///") :]
        if not path or not os.path.isfile(path):
            raise ValueError(f"no SQLite file at {path!r} ({kind.urls})")
        return SQLiteSessionStore(path, table=table)
    if kind is _POSTGRES:
        from sessionware.stores.postgres import PostgresSessionStore

        return PostgresSessionStore.from_dsn(location, table=table)
    from sessionware.stores.mysql import MySQLSessionStore

    return MySQLSessionStore.from_dsn(location, table=table)


def _sqlite_columns(path: str, table: str) -> set[str]:
    uri = Path(path).absolute().as_uri() + "?mode=ro"  # never creates or changes a file
    conn = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:  # the table name was checked by the store: the only text formatted into SQL
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    finally:
        conn.close()


async def _columns(kind: _Kind, location: str, table: str) -> set[str]:
    """The columns of ``table`` (none: it does not exist), read from the database's catalog
    without changing anything, so the store never creates or upgrades a table for this
    command (a mistyped --table, or a first-version table still used by the old version)."""
    if kind is _SQLITE:
        return _sqlite_columns(location[len("sqlite:///") :], table)
    if kind is _POSTGRES:
        import asyncpg  # type: ignore[import-untyped]

        pg = await asyncpg.connect(location, timeout=10)
        try:
            rows = await pg.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1)"
                " AND attnum > 0 AND NOT attisdropped",
                table,
            )
        finally:
            await pg.close()
        return {row["attname"] for row in rows}
    import asyncmy

    url = urlsplit(location)
    my = await asyncmy.connect(
        host=url.hostname or "127.0.0.1",
        port=url.port or 3306,
        user=unquote(url.username or "root"),
        password=unquote(url.password or ""),
        db=unquote(url.path.strip("/")),
        connect_timeout=10,
    )
    schema, _, name = table.rpartition(".")
    try:
        async with my.cursor() as cursor:
            await cursor.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = COALESCE(NULLIF(%s, ''), DATABASE()) AND table_name = %s",
                (schema, name),
            )
            return {str(row[0]).lower() for row in await cursor.fetchall()}
    finally:
        my.close()


async def _clear(kind: _Kind, location: str, table: str, batch: int) -> int:
    """Check the table is there and current, then run the store's own ``clear_expired``."""
    try:
        store = _open_store(kind, location, table)
    except (ValueError, ImportError) as exc:  # a bad URL or table name; a driver not installed
        raise RuntimeError(str(exc)) from None
    try:
        columns = await _columns(kind, location, table)
    except Exception as exc:  # any driver's own errors (imported lazily): nothing to read
        raise RuntimeError(f"{kind.name}: cannot read the table's columns: {exc}") from exc
    if not columns:
        raise RuntimeError(
            f"{kind.name}: no table {table!r} here: pass --table with the table the store was"
            f" given (its table= argument; the default is {kind.table}), or check the database"
            " in the URL. The store creates its table on first use, so a store never used has"
            " nothing to clear"
        )
    if "version" not in columns:
        raise RuntimeError(
            f"{kind.name}: {table!r} is a sessionware 0.1 table: the app upgrades it on first"
            " use once every process runs this version, and this command never changes a"
            " table; until then, clear it with the sessionware 0.1 command"
        )
    progress = _Progress(batch, sys.stderr)
    try:
        deleted: int = await store.clear_expired(batch_size=batch, on_batch=progress.update)
    except StoreError as exc:
        raise RuntimeError(str(exc)) from exc
    finally:
        progress.close()
        await store.aclose()
    return deleted


def _clear_expired(args: argparse.Namespace) -> int:
    location: str = args.store
    scheme = location.split(":", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        print("nothing to do: Redis expires sessions by itself (every key carries its TTL)")
        return 0
    kind = _KINDS.get(scheme)
    try:
        if kind is None:
            urls = ", ".join(dict.fromkeys(k.urls for k in _KINDS.values()))
            raise RuntimeError(f"unknown store {location!r}: use {urls}")
        deleted = asyncio.run(_clear(kind, location, args.table or kind.table, args.batch_size))
    except RuntimeError as exc:
        print(f"sessionware clear-expired: {exc}", file=sys.stderr)
        return 1
    print(f"deleted {deleted} expired rows (sessions and user-index entries)")
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


def _cookie_value_last(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with ``decode``'s COOKIE moved after ``--`` when it starts with ``-`` (a SIGNED
    cookie's base64url MAC may): argparse would take it for an option it does not know."""
    if argv[:1] != ["decode"] or "--" in argv:
        return argv
    known, valued = parser.get_default("decode_options")
    rest, cookie, skip = [], None, False
    for arg in argv[1:]:
        if skip or arg == "-" or not arg.startswith("-") or arg.split("=", 1)[0] in known:
            skip = not skip and arg in valued
            rest.append(arg)
        elif cookie is None:
            cookie = arg
        else:
            rest.append(arg)
    return argv if cookie is None else ["decode", *rest, "--", cookie]


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
    decode.add_argument(
        "--no-hash-keys",
        dest="hash_keys",
        action="store_false",
        help="for a server-side session: the store was built with hash_keys=False, so it files"
        " the session under its key, not the key's SHA-256",
    )
    decode.set_defaults(run=_decode)
    options = [(o, a.nargs != 0) for a in decode._actions for o in a.option_strings]
    parser.set_defaults(
        decode_options=(frozenset(o for o, _ in options), frozenset(o for o, v in options if v))
    )

    clear = commands.add_parser(
        "clear-expired",
        help="delete expired sessions from a SQLite, PostgreSQL or MySQL/MariaDB store",
        description="Delete expired sessions, tombstones and user-index entries with the store's"
        " own clear_expired(), in short batches through the expires index, and print how many"
        " rows went. Progress goes to stderr when there is more than one batch. The command never"
        " creates or upgrades a table.",
    )
    clear.add_argument(
        "--store",
        required=True,
        metavar="URL",
        help="sqlite:///relative/path, sqlite:////absolute/path, postgresql://user@host/db or"
        " mysql://user:password@host/db (mariadb:// too)",
    )
    clear.add_argument(
        "--table",
        help="the store's table= (default: sessions for SQLite, sessionware_sessions otherwise)",
    )
    clear.add_argument(
        "--batch-size",
        type=_positive,
        default=DEFAULT_BATCH,
        metavar="N",
        help="rows deleted per statement, so the app never waits long for one"
        f" (default: {DEFAULT_BATCH}, the stores' own)",
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
    parser = _parser()
    args = parser.parse_args(
        _cookie_value_last(parser, list(sys.argv[1:] if argv is None else argv))
    )
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
