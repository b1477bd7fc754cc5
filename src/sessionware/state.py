"""The stored state format: actix-session's versioned envelope, legacy 0.11 read and write.

Write: ``{"v":1,"state":{...}}`` plus optional metadata fields actix ignores (``created``,
``expires``, ``seen``: Unix seconds; ``user``, ``agent``: the bound user and a user-agent summary;
``device``: the device binding, a JSON object ``sessionware.dbsc`` reads; ``lifetime``: the
per-session lifetime ``Session.set_expiry`` chose, whole seconds, 0 for a browser session;
``indexes``: the other indexes the session is filed under, ``{name: value}``, ``Session.index``;
``issued``: when the session's key was issued, written by a renewal or rotation: absent, it is
``created``). Read (SPEC §4.4): the v1 envelope; an object whose values are all strings is the
legacy 0.11 format (each value is JSON text); any other object is the state itself.
JSON only: no pickle, no NaN or infinity, no lone surrogates, nesting at most ``MAX_DEPTH`` deep: a
state that decodes but could not be encoded again is unreadable, so it never fails later.
"""

from __future__ import annotations

import json
import json.scanner
import math
import re
import sys
from collections.abc import Callable, Mapping
from itertools import chain, compress, repeat
from operator import not_
from typing import Any, cast

from sessionware.errors import DeserializationError

__all__ = [
    "MAX_DEPTH",
    "MAX_USER_ID",
    "TOMBSTONE_HEAD",
    "DeserializationError",
    "StoredState",
    "check_value",
    "decode_fields",
    "decode_state",
    "encode_state",
    "encode_tombstone",
    "read_rotation",
    "read_tombstone",
    "state_members",
    "state_unchanged",
    "stored_state",
    "user_id_problem",
]

MAX_USER_ID = 255
"""The longest user id a session may be bound to (characters): what every store's index can
hold (MariaDB's is ``VARCHAR(255)``)."""
_USER_ID_RULE = f"a user id is 1 to {MAX_USER_ID} printable characters (no control characters)"


def user_id_problem(user_id: object) -> str | None:
    """Why ``user_id`` cannot be a session's user, or ``None`` when it can: the one rule,
    applied by ``bind_user`` and to every record read. ``isprintable`` also refuses NUL and
    lone surrogates, which PostgreSQL and MariaDB cannot store."""
    if type(user_id) is not str:
        return f"user ids are str, not {type(user_id).__name__}"
    if not user_id or len(user_id) > MAX_USER_ID or not user_id.isprintable():
        return _USER_ID_RULE
    return None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_encoder = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))
_make_c_encoder: Any = getattr(json.encoder, "c_make_encoder", None)
_encode_text = json.encoder.encode_basestring
# On Python >= 3.11 one C encoder serves every call: without a circular-reference map it holds
# no state (a cycle ends in RecursionError, which check_value reports as too deep), and calling
# it directly skips the two Python-level methods JSONEncoder.encode goes through.
_c_encode: Any = (
    _make_c_encoder(None, _encoder.default, _encode_text, None, ":", ",", False, False, False)
    if _make_c_encoder is not None and sys.version_info >= (3, 11)
    else None
)


def _dumps_c(value: Any) -> str:
    """``_encoder.encode(value)``, straight through the shared C encoder."""
    if type(value) is str:
        return _encode_text(value)
    return "".join(_c_encode(value, 0))


_dumps: Callable[[Any], str] = _dumps_c if _c_encode is not None else _encoder.encode

MAX_DEPTH = 128
"""How deeply containers may nest in a session value (far beyond any real session; well within
what the JSON codecs can recurse into from any stack depth)."""


class StoredState(dict[str, Any]):
    """A session's state as a store returns it, with the envelope's metadata alongside.

    It is a plain ``dict`` for every other purpose. ``created``, ``expires`` and ``seen`` (last
    write) are Unix seconds; ``user`` is the user the session is bound to and ``agent`` a short
    user-agent summary; ``device`` the device binding (``sessionware.dbsc``); ``lifetime`` the
    per-session lifetime in seconds (``Session.set_expiry``; 0: until the browser closes); each
    is ``None`` when the record did not carry it (an actix record, say).
    """

    # Slots, each set when one is built: CPython specializes reads of slots, not of instance
    # attributes that fall back to a class-level default.
    __slots__ = (
        "__dict__",
        "agent",
        "applied",
        "created",
        "device",
        "expires",
        "indexes",
        "issued",
        "lifetime",
        "seen",
        "user",
    )
    created: float | None
    expires: float | None
    seen: float | None
    user: str | None
    agent: str | None
    device: dict[str, Any] | None
    lifetime: float | None
    applied: tuple[str, ...] | None
    """The ids of the last read-modify-write updates merged into the record (``update_or``),
    so a write whose answer was lost can tell that it landed and is not applied twice."""
    indexes: dict[str, str | None] | None
    """The indexes besides the user's the session is filed under (``Session.index``): name to
    value. In a write's metadata, a ``None`` value takes the session out of that index."""
    issued: float | None
    """When the session's current key was issued (a renewal or rotation); ``None``: at
    ``created``. Automatic rotation reads it."""

    def __init__(
        self,
        state: Mapping[str, Any] = (),  # type: ignore[assignment]
        *,
        created: float | None = None,
        expires: float | None = None,
        seen: float | None = None,
        user: str | None = None,
        agent: str | None = None,
        device: dict[str, Any] | None = None,
        applied: tuple[str, ...] | None = None,
        lifetime: float | None = None,
        indexes: dict[str, str | None] | None = None,
        issued: float | None = None,
    ) -> None:
        dict.__init__(self, state)
        _set_fields(
            self, created, user, agent, device, expires, seen, applied, lifetime, indexes, issued
        )


def check_value(value: Any, depth: bool = True) -> str:
    """Return ``value`` as compact JSON text, or raise ``ValueError``/``TypeError`` saying why not.

    ``depth=False`` skips the nesting check, for a value made of parts already checked (a
    state whose values were checked when inserted or read): the check walks the value in
    Python, which can cost more than the encode it guards."""
    try:
        text = _dumps(value)
        if not text.isascii():
            text.encode("utf-8")
    except RecursionError:
        raise ValueError("value is nested too deeply to be stored as JSON") from None
    except UnicodeEncodeError:
        raise ValueError("value holds a lone surrogate, which is not valid UTF-8") from None
    if depth and len(text) > MAX_DEPTH and too_deep(value, text):
        raise ValueError(f"value nests containers more than {MAX_DEPTH} deep")
    return text


def too_deep(value: Any, text: str) -> bool:
    """Whether ``value`` (whose JSON is ``text``) nests containers deeper than ``MAX_DEPTH``.

    It goes down one level at a time, each level's containers gathered by C iterators, so it
    costs a fraction of the encode it guards."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False  # cannot nest deeper than it has brackets
    level: list[Any] = [value] if isinstance(value, _CONTAINERS) else []
    for _ in range(MAX_DEPTH):
        if not level:
            return False
        is_dict = list(map(isinstance, level, repeat(dict)))
        children = list(
            chain(
                chain.from_iterable(map(_values, compress(level, is_dict))),
                chain.from_iterable(compress(level, map(not_, is_dict))),
            )
        )
        level = list(compress(children, map(isinstance, children, repeat(_CONTAINERS))))
    return bool(level)


_CONTAINERS = (dict, list)
_values: Callable[[Any], Any] = dict.values


def encode_state(
    state: Mapping[str, Any],
    *,
    created: float | None = None,
    expires: float | None = None,
    user: str | None = None,
    legacy: bool = False,
    state_json: str | None = None,
    seen: float | None = None,
    agent: str | None = None,
    device: dict[str, Any] | None = None,
    applied: tuple[str, ...] | None = None,
    lifetime: float | None = None,
    indexes: Mapping[str, str | None] | None = None,
    issued: float | None = None,
) -> str:
    """Serialise ``state`` as the v1 envelope (or, with ``legacy``, the actix 0.11 map of JSON texts).

    The metadata fields not given default to the ones a ``StoredState`` carries; ``state_json``
    is ``state`` already encoded (``check_value``), to save encoding it again (then ``state``
    itself is not read). The state comes first (``ENVELOPE_HEAD``), so ``state_unchanged`` can
    compare it with one ``startswith``.
    """
    if legacy:
        return _dumps({key: _dumps(value) for key, value in state.items()})
    if (  # the common envelopes (the cookie store's, a record with no user), in one step
        state_json is not None
        and user is None
        and created is not None
        and expires is not None
        and agent is None
        and device is None
        and applied is None
        and lifetime is None
        and indexes is None
        and issued is None
        and not isinstance(state, StoredState)
    ):
        times = f'"created":{int(created)},"expires":{int(expires)}}}'
        if seen is None:
            return f"{ENVELOPE_HEAD}{state_json},{times}"
        return f'{ENVELOPE_HEAD}{state_json},"seen":{int(seen)},{times}'
    if isinstance(state, StoredState):
        created = state.created if created is None else created
        expires = state.expires if expires is None else expires
        seen = state.seen if seen is None else seen
        user = state.user if user is None else user
        agent = state.agent if agent is None else agent
        device = state.device if device is None else device
        applied = state.applied if applied is None else applied
        lifetime = state.lifetime if lifetime is None else lifetime
        indexes = state.indexes if indexes is None else indexes
        issued = state.issued if issued is None else issued
    text = ENVELOPE_HEAD + (_dumps(state) if state_json is None else state_json)
    if seen is not None:
        text += f',"seen":{int(seen)}'
    if user is not None:
        text += f',"user":{_dumps(user)}'
    if agent is not None:
        text += f',"agent":{_dumps(agent)}'
    if device is not None:
        text += f',"device":{_dumps(device)}'
    if applied is not None:
        text += f',"applied":{_dumps(list(applied))}'
    if lifetime is not None:
        text += f',"lifetime":{int(lifetime)}'
    if indexes:
        filed = {name: value for name, value in indexes.items() if value is not None}
        if filed:
            text += f',"indexes":{_dumps(filed)}'
    if issued is not None:
        text += f',"issued":{int(issued)}'
    if created is not None:
        text += f',"created":{int(created)}'
    if expires is not None:
        text += f',"expires":{int(expires)}'
    return text + "}"


def stored_state(
    state: Mapping[str, Any],
    created: float | None,
    user: str | None = None,
    agent: str | None = None,
    device: dict[str, Any] | None = None,
    expires: float | None = None,
    seen: float | None = None,
    applied: tuple[str, ...] | None = None,
    lifetime: float | None = None,
    indexes: dict[str, str | None] | None = None,
    issued: float | None = None,
    /,
) -> StoredState:
    """``StoredState(state, created=..., ...)`` built by C calls and the fields given (the
    repository builds one for every write)."""
    result = _new_state(StoredState)
    _fill_state(result, state)
    _set_fields(
        result, created, user, agent, device, expires, seen, applied, lifetime, indexes, issued
    )
    return result


def _set_fields(
    result: StoredState,
    created: float | None,
    user: str | None,
    agent: str | None,
    device: dict[str, Any] | None,
    expires: float | None,
    seen: float | None,
    applied: tuple[str, ...] | None = None,
    lifetime: float | None = None,
    indexes: dict[str, str | None] | None = None,
    issued: float | None = None,
) -> None:
    """Set every metadata field."""
    result.created, result.expires, result.seen = created, expires, seen
    result.user, result.agent, result.device = user, agent, device
    result.applied, result.lifetime, result.indexes = applied, lifetime, indexes
    result.issued = issued


ENVELOPE_HEAD = '{"v":1,"state":'


def state_unchanged(envelope: str, state_json: str) -> bool:
    """Whether ``envelope`` (as ``encode_state`` wrote it) holds exactly ``state_json``."""
    end = len(ENVELOPE_HEAD) + len(state_json)
    return (
        envelope.startswith(ENVELOPE_HEAD)
        and envelope.startswith(state_json, len(ENVELOPE_HEAD))
        and envelope[end : end + 1] in (",", "}")
    )


Member = tuple[int, int, Any]
"""Where a state's value sits in its envelope's text (start, end) and the value it decodes to."""


def state_members(envelope: str) -> dict[str, Member] | None:
    """Each state key of ``envelope`` (a v1 envelope in compact JSON, as ``encode_state``
    writes it) with where its value's text sits, read by the C scanner; ``None`` for any other
    text."""
    start = len(ENVELOPE_HEAD)
    if not envelope.startswith(ENVELOPE_HEAD) or envelope[start : start + 1] != "{":
        return None
    members: dict[str, Member] = {}
    index = start + 1
    try:
        if envelope[index] == "}":
            return members
        while True:
            if envelope[index] != '"':
                return None
            key, index = _scan_text(envelope, index + 1, True)
            if envelope[index] != ":":
                return None
            value, end = _scan(envelope, index + 1)
            members[key] = (index + 1, end, value)
            if envelope[end] == "}":
                return members
            if envelope[end] != ",":
                return None
            index = end + 1
    except (ValueError, IndexError, StopIteration, RecursionError):
        return None


def decode_state(raw: str | bytes) -> StoredState:
    """Parse any format actix-session reads into a ``StoredState``; raise ``DeserializationError``."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = _scan_object(text)
        if data is None:  # _decode reads what the scanner did not, or raises what it deserves
            data = _decode(text)
    except (ValueError, RecursionError, TypeError) as exc:
        raise DeserializationError(
            f"session state is not valid JSON: {type(exc).__name__}"
        ) from None
    result = _envelope(data) if type(data) is dict else None
    if result is None:
        result = _decode_object(data)
    if len(text) > MAX_DEPTH and too_deep(result, text):
        raise DeserializationError(f"session state nests more than {MAX_DEPTH} deep")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        # JSON may spell a lone surrogate (\ud800), which no JSON encoder will write back.
        try:
            check_value(dict(result))
            if result.device is not None:
                check_value(result.device)
        except ValueError as exc:
            raise DeserializationError(f"session state cannot be stored again: {exc}") from None
    return result


StateFields = tuple[dict[str, Any], float | None, float | None, str | None]
"""A state with its ``created``, ``expires`` and ``user`` (``decode_fields``)."""


def decode_fields(text: str) -> StateFields:
    """``decode_state``'s state, ``created``, ``expires`` and ``user``, without building a
    ``StoredState`` when the text is a v1 envelope no further check applies to (the cookie
    store's path); anything else goes through ``decode_state``."""
    if "\\u" not in text:  # a spelled-out surrogate needs decode_state's check
        data = _scan_object(text)
        fields = _envelope_fields(data) if type(data) is dict else None
        if fields is not None and not (len(text) > MAX_DEPTH and too_deep(fields[0], text)):
            return fields[0], fields[1], fields[2], fields[4]
    result = decode_state(text)
    return result, result.created, result.expires, result.user


def _scan_object(text: str) -> Any:
    """What ``text`` holds when it is one JSON value with nothing around it ending in ``}`` (what
    stores and cookies hold), read by the C scanner alone; ``None`` for anything else."""
    try:
        data, end = _scan(text, 0)
    except Exception:
        return None
    return data if end == len(text) and text[-1:] == "}" else None


_Fields = tuple[
    dict[str, Any], "int | None", "int | None", "int | None", "str | None", "str | None"
]


def _envelope_fields(data: dict[str, Any]) -> _Fields | None:
    """The v1 envelope exactly as ``encode_state`` writes it (integer times, text user and
    agent, no device), checked inline: state, created, expires, seen, user, agent; ``None``
    for anything else, which ``_decode_object`` reads or names the problem of."""
    state = data.get("state")
    version = data.get("v")
    if type(state) is not dict or version != 1 or type(version) is not int:
        return None
    if (
        "device" in data
        or "applied" in data
        or "lifetime" in data
        or "indexes" in data
        or "issued" in data
    ):  # _decode_object reads those
        return None
    created, expires, seen = data.get("created"), data.get("expires"), data.get("seen")
    user, agent = data.get("user"), data.get("agent")
    if not (
        (created is None or (type(created) is int and 0 <= created < _MAX_TIMESTAMP))
        and (expires is None or (type(expires) is int and 0 <= expires < _MAX_TIMESTAMP))
        and (seen is None or (type(seen) is int and 0 <= seen < _MAX_TIMESTAMP))
        and (user is None or user_id_problem(user) is None)
        and (agent is None or type(agent) is str)
    ):
        return None
    return state, created, expires, seen, user, agent


def _envelope(data: dict[str, Any]) -> StoredState | None:
    """``_envelope_fields`` as a ``StoredState``, built by C calls and the fields it carries."""
    fields = _envelope_fields(data)
    if fields is None:
        return None
    state, created, expires, seen, user, agent = fields
    result = _new_state(StoredState)
    _fill_state(result, state)
    _set_fields(
        result,
        None if created is None else float(created),
        user,
        agent,
        None,
        None if expires is None else float(expires),
        None if seen is None else float(seen),
    )
    return result


def _decode_object(data: Any) -> StoredState:
    if not isinstance(data, dict):
        raise DeserializationError("session state is not a JSON object")
    version = data.get("v")
    state = data.get("state")
    if (
        isinstance(state, dict)
        and isinstance(version, (int, float))
        and not isinstance(version, bool)
    ):
        if type(version) is not int or version != 1:
            raise DeserializationError(f"unknown session state version {version!r}")
        return StoredState(
            state,
            created=_timestamp(data, "created"),
            expires=_timestamp(data, "expires"),
            seen=_timestamp(data, "seen"),
            user=_user(data),
            agent=_text(data, "agent"),
            device=_object(data, "device"),
            applied=_applied(data),
            lifetime=_timestamp(data, "lifetime"),
            indexes=_indexes(data),
            issued=_timestamp(data, "issued"),
        )
    if all(isinstance(value, str) for value in data.values()):
        try:
            return StoredState({key: _decode(value) for key, value in data.items()})
        except (ValueError, RecursionError):
            raise DeserializationError("legacy session value is not valid JSON") from None
    return StoredState(data)


def encode_tombstone(
    successor: str | None, rotated: float | None = None, key: str | None = None
) -> str:
    """The record a purged (``successor=None``) or renewed key leaves behind for a while.

    ``rotated``: the key was rotated (no privilege change) at that time, not renewed by a
    login: within the grace window loads and writes follow the successor; ``key``: the
    successor's key sealed for holders of the old one (``Repository``). Version 0 makes
    actix-session read it as undecodable (an empty session), never as state.
    """
    if rotated is None:
        return _dumps({"v": 0, "state": {}, "successor": successor})
    return _dumps(
        {"v": 0, "state": {}, "successor": successor, "rotated": int(rotated), "key": key}
    )


TOMBSTONE_HEAD = b'{"v":0,'
"""How every tombstone starts (and no state record does): a cheap test before any parsing."""


def read_tombstone(raw: str | bytes) -> tuple[bool, str | None]:
    """``(True, successor)`` if ``raw`` is a tombstone from ``encode_tombstone``, else ``(False, None)``."""
    head = raw[:16] if isinstance(raw, str) else raw[:16].decode("latin-1")
    if not head.startswith(TOMBSTONE_HEAD.decode()):
        return False, None
    try:
        data = json.loads(raw)
    except ValueError:
        return False, None
    successor = data.get("successor")
    return True, successor if isinstance(successor, str) else None


def read_rotation(raw: str | bytes) -> tuple[float, str | None] | None:
    """``(when, sealed successor key)`` for a rotation's tombstone; ``None`` for any other
    record (a login renewal's or a purge's tombstone, a live record, nothing readable)."""
    if not read_tombstone(raw)[0]:
        return None
    data = json.loads(raw)
    rotated, key = data.get("rotated"), data.get("key")
    if type(rotated) is not int or not 0 <= rotated < _MAX_TIMESTAMP:
        return None
    return float(rotated), key if isinstance(key, str) else None


def _text(data: Mapping[str, Any], field: str) -> str | None:
    value = data.get(field)
    if value is None or isinstance(value, str):
        return value
    raise DeserializationError(f"session metadata field {field!r} is not a string")


def _user(data: Mapping[str, Any]) -> str | None:
    """The ``user`` metadata, when ``bind_user`` would have taken it: a record holding one no
    store's index can hold (NUL, over ``MAX_USER_ID``) is unreadable, never a store failure."""
    value = data.get("user")
    problem = None if value is None else user_id_problem(value)
    if problem is not None:
        raise DeserializationError(f"session metadata field 'user' is unusable: {problem}")
    return value


def _applied(data: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The ``applied`` metadata: a short list of short ids (``Repository.save`` writes it)."""
    value = data.get("applied")
    if value is None:
        return None
    if (
        isinstance(value, list)
        and len(value) <= MAX_APPLIED
        and all(isinstance(i, str) and 0 < len(i) <= 32 and i.isalnum() for i in value)
    ):
        return tuple(value)
    raise DeserializationError("session metadata field 'applied' is not a list of update ids")


def _indexes(data: Mapping[str, Any]) -> dict[str, str | None] | None:
    """The ``indexes`` metadata: index names to values, all strings (``Session.index``)."""
    value = data.get("indexes")
    if value is None:
        return None
    if isinstance(value, dict) and all(
        isinstance(k, str) and k.isidentifier() and isinstance(v, str) and v.isprintable()
        for k, v in value.items()
    ):
        return dict(value)
    raise DeserializationError("session metadata field 'indexes' is not an object of strings")


MAX_APPLIED = 8
"""How many update ids a record keeps: more writers than this racing one update could still
apply it twice if its answer is lost."""


def _object(data: Mapping[str, Any], field: str) -> dict[str, Any] | None:
    value = data.get(field)
    if value is None or isinstance(value, dict):
        return value
    raise DeserializationError(f"session metadata field {field!r} is not an object")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: no JSON encoder writes it back
        raise ValueError("number out of range")
    return value


# One decoder for every call: json.loads(..., parse_constant=...) builds a new one each time.
_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)
_decode = _decoder.decode
# The C scanner that decode() wraps in Python (typeshed types make_scanner oddly).
_scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(cast(Any, _decoder))
_scan_text: Callable[[str, int, bool], tuple[str, int]] = cast(Any, json.decoder).scanstring


_MAX_TIMESTAMP = 2**40
# StoredState(state) in C calls alone: the dict's __new__ (no __init__), then its update.
_new_state = dict.__new__
_fill_state = dict.update


def _timestamp(data: Mapping[str, Any], field: str) -> float | None:
    value = data.get(field)
    if value is None:
        return None
    if type(value) is int and 0 <= value < _MAX_TIMESTAMP:  # what encode_state writes
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DeserializationError(f"session metadata field {field!r} is not a timestamp")
    if not 0 <= value < _MAX_TIMESTAMP:
        raise DeserializationError(f"session metadata field {field!r} is out of range")
    return float(value)
