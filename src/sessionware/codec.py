"""Values beyond JSON, without pickle: ``SessionMiddleware(codec=TaggedJSON())``.

A codec turns a session value into a JSON value on the way to the store and back on the way
in; the state still goes through the one JSON encoder and decoder (``sessionware.state``), so
every store, the cookie included, holds JSON a person can read. ``TaggedJSON`` writes each
value JSON cannot hold as an object naming its type::

    {"__tag__": "datetime", "value": "2024-05-01T12:00:00+02:00"}

and a plain object of the app's that has a key ``__tag__`` (or ``__tag__~``, ``__tag__~~``...)
is written with one more ``~`` in that key, and read back without it: a tag cannot be forged
from data. An object that claims a tag this codec does not know is unreadable state.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Any

from sessionware.errors import DeserializationError
from sessionware.repository import MISSING, Update

__all__ = ["TAG", "TaggedJSON", "may_hold_tags"]

TAG = "__tag__"
"""The key of a tagged object."""
_ESCAPE = "~"


class TaggedJSON:
    """The codec of ``datetime`` (aware and naive), ``date``, ``time``, ``timedelta``, ``UUID``,
    ``Decimal``, ``bytes``, ``set``, ``frozenset`` and ``tuple``, each round-tripping exactly
    (an aware datetime keeps its offset, and its ``ZoneInfo`` zone when it has one)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TaggedJSON()"

    # -- to JSON -------------------------------------------------------------------------------

    def encode(self, value: Any) -> Any:
        """``value`` as JSON values only; ``TypeError`` naming a type it cannot hold."""
        kind = type(value)
        if kind is str or kind is int or kind is float or kind is bool or value is None:
            return value
        if kind is list:
            return [self.encode(item) for item in value]
        if kind is dict:
            return {_escaped(key): self.encode(item) for key, item in value.items()}
        writer = _WRITERS.get(kind)
        if writer is None:
            raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")
        tag, write = writer
        return {TAG: tag, "value": write(self, value)}

    def encode_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """A whole state as JSON values (its keys are the session's, never escaped: only the
        objects inside values are)."""
        encode = self.encode
        return {key: encode(value) for key, value in state.items()}

    def encode_update(self, update: Update) -> Update:
        """``update`` applied to JSON values: the stored value is decoded for ``fn`` and its
        result encoded again (the merge re-applies it to what is stored)."""
        fn = update.fn

        def coded(value: Any) -> Any:
            return self.encode(fn(self.decode(value)))

        default = update.default
        return Update(coded, default if default is MISSING else self.encode(default))

    # -- from JSON -----------------------------------------------------------------------------

    def decode(self, value: Any) -> Any:
        """What ``encode`` gave ``value`` for; ``DeserializationError`` for an unknown tag or a
        malformed tagged value."""
        kind = type(value)
        if kind is list:
            return [self.decode(item) for item in value]
        if kind is not dict:
            return value
        if TAG in value:
            return self._tagged(value)
        return {_unescaped(key): self.decode(item) for key, item in value.items()}

    def decode_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """A whole state as ``decode`` reads each value."""
        decode = self.decode
        return {key: decode(value) for key, value in state.items()}

    def _tagged(self, value: dict[str, Any]) -> Any:
        tag = value[TAG]
        reader = _READERS.get(tag) if type(tag) is str else None
        if reader is None or len(value) != 2 or "value" not in value:
            raise DeserializationError("session state holds a tagged value of no known type")
        try:
            return reader(self, value["value"])
        except DeserializationError:
            raise
        except (ValueError, TypeError, KeyError, ArithmeticError, binascii.Error):
            raise DeserializationError(f"session state holds a malformed {tag} value") from None


def may_hold_tags(text: str) -> bool:
    """Whether JSON ``text`` may hold a tag or an escaped key (else the codec has nothing to
    read in it, and its walk is skipped): it spells ``__tag__``, or escapes a character."""
    return TAG in text or "\\u" in text


def _escaped(key: Any) -> Any:
    if type(key) is str and key.startswith(TAG) and key.strip(_ESCAPE) == TAG:
        return key + _ESCAPE
    return key


def _unescaped(key: str) -> str:
    if key.startswith(TAG) and key.endswith(_ESCAPE) and key.rstrip(_ESCAPE) == TAG:
        return key[:-1]
    return key


def _write_datetime(codec: TaggedJSON, value: dt.datetime) -> Any:
    _whole_second_offset(value.utcoffset())
    text = value.isoformat()
    zone = value.tzinfo
    if isinstance(zone, zoneinfo.ZoneInfo) and zone.key:
        return [text, zone.key]
    return text


def _read_datetime(codec: TaggedJSON, value: Any) -> dt.datetime:
    if type(value) is list and len(value) == 2 and all(type(v) is str for v in value):
        moment = dt.datetime.fromisoformat(value[0])
        if moment.tzinfo is None:
            raise ValueError("a zoned datetime without an offset")
        try:
            zone = zoneinfo.ZoneInfo(value[1])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return moment.astimezone(zone)
    return dt.datetime.fromisoformat(_text(value))


def _write_time(codec: TaggedJSON, value: dt.time) -> Any:
    if value.tzinfo is not None and not isinstance(value.tzinfo, dt.timezone):
        raise TypeError("a time with a time zone other than a fixed offset cannot be stored")
    _whole_second_offset(value.utcoffset())
    return value.isoformat()


def _whole_second_offset(offset: dt.timedelta | None) -> None:
    """Refuse a UTC offset with a fraction of a second: ``fromisoformat`` (Python 3.11) reads it
    back without the fraction, so it would not round-trip."""
    if offset is not None and offset.microseconds:
        raise TypeError("a UTC offset with a fraction of a second cannot be stored")


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError("not a string")
    return value


def _write_timedelta(codec: TaggedJSON, value: dt.timedelta) -> Any:
    return [value.days, value.seconds, value.microseconds]


def _read_timedelta(codec: TaggedJSON, value: Any) -> dt.timedelta:
    if type(value) is not list or len(value) != 3 or any(type(v) is not int for v in value):
        raise TypeError("not [days, seconds, microseconds]")
    return dt.timedelta(days=value[0], seconds=value[1], microseconds=value[2])


def _read_bytes(codec: TaggedJSON, value: Any) -> bytes:
    return base64.b64decode(_text(value), validate=True)


def _items(value: Any) -> list[Any]:
    if type(value) is not list:
        raise TypeError("not a list")
    return value


_WRITERS: dict[type, tuple[str, Callable[[TaggedJSON, Any], Any]]] = {
    dt.datetime: ("datetime", _write_datetime),
    dt.date: ("date", lambda codec, value: value.isoformat()),
    dt.time: ("time", _write_time),
    dt.timedelta: ("timedelta", _write_timedelta),
    uuid.UUID: ("uuid", lambda codec, value: str(value)),
    decimal.Decimal: ("decimal", lambda codec, value: str(value)),
    bytes: ("bytes", lambda codec, value: base64.b64encode(value).decode("ascii")),
    set: ("set", lambda codec, value: [codec.encode(item) for item in value]),
    frozenset: ("frozenset", lambda codec, value: [codec.encode(item) for item in value]),
    tuple: ("tuple", lambda codec, value: [codec.encode(item) for item in value]),
}
"""How each type is written: its tag and its JSON value (exact types only: a subclass's own
meaning would not survive)."""

_READERS: dict[str, Callable[[TaggedJSON, Any], Any]] = {
    "datetime": _read_datetime,
    "date": lambda codec, value: dt.date.fromisoformat(_text(value)),
    "time": lambda codec, value: dt.time.fromisoformat(_text(value)),
    "timedelta": _read_timedelta,
    "uuid": lambda codec, value: uuid.UUID(_text(value)),
    "decimal": lambda codec, value: decimal.Decimal(_text(value)),
    "bytes": _read_bytes,
    "set": lambda codec, value: {codec.decode(item) for item in _items(value)},
    "frozenset": lambda codec, value: frozenset(codec.decode(item) for item in _items(value)),
    "tuple": lambda codec, value: tuple(codec.decode(item) for item in _items(value)),
}
"""How each tag is read back: ``_WRITERS`` the other way."""
