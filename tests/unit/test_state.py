"""The stored state format (SPEC §4.4): the v1 envelope and actix 0.11's legacy map, both ways."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionware.session import Session, SessionInsertError
from sessionware.state import (
    MAX_DEPTH,
    MAX_USER_ID,
    DeserializationError,
    StoredState,
    decode_fields,
    decode_state,
    encode_state,
    encode_tombstone,
    read_rotation,
    read_tombstone,
    state_members,
    too_deep,
    user_id_problem,
)

VALUES = {"s": "value", "n": 1, "f": 2.5, "b": False, "z": None, "o": {"a": [1, "x"]}, "l": []}


def test_v1_round_trip_of_every_json_kind() -> None:
    text = encode_state(VALUES)
    assert json.loads(text) == {"v": 1, "state": VALUES}
    assert decode_state(text) == VALUES
    assert decode_state(text.encode()) == VALUES


def test_values_are_not_double_encoded() -> None:
    raw = json.loads(encode_state({"k": "value", "n": 1}))
    assert raw["state"]["k"] == "value" and raw["state"]["n"] == 1


def test_metadata_rides_along_and_round_trips() -> None:
    text = encode_state(StoredState({"a": 1}, created=1700000000.7, expires=1700003600))
    assert json.loads(text) == {
        "v": 1,
        "state": {"a": 1},
        "created": 1700000000,
        "expires": 1700003600,
    }
    state = decode_state(text)
    assert state == {"a": 1} and state.created == 1700000000 and state.expires == 1700003600


def test_every_metadata_field_given_or_carried_writes_the_same_record() -> None:
    fields = {
        "created": 1700000000.0,
        "expires": 1700003600.0,
        "seen": 1700000100.0,
        "user": "ada",
        "agent": "Firefox",
        "device": {"id": "d1"},
        "lifetime": 2592000.0,
    }
    given = encode_state({"a": [1]}, **fields)  # type: ignore[arg-type]
    assert encode_state(StoredState({"a": [1]}, **fields)) == given  # type: ignore[arg-type]
    assert encode_state({}, state_json='{"a":[1]}', **fields) == given  # type: ignore[arg-type]
    state = decode_state(given)
    assert state == {"a": [1]}
    assert (state.created, state.expires, state.seen) == (1700000000, 1700003600, 1700000100)
    assert (state.user, state.agent, state.device) == ("ada", "Firefox", {"id": "d1"})
    assert state.lifetime == 2592000


@pytest.mark.parametrize("present", range(32))
def test_the_one_step_envelopes_write_what_the_general_path_writes(present: int) -> None:
    optional = {
        "seen": 1700000100.0,
        "user": "ada",
        "agent": "Firefox",
        "device": {"id": "d1"},
        "lifetime": 0.0,
    }
    fields: dict[str, Any] = {"created": 1700000000.0, "expires": 1700003600.0}
    fields.update(
        (name, value) for i, (name, value) in enumerate(optional.items()) if present >> i & 1
    )
    general = encode_state({"a": [1]}, **fields)
    assert encode_state({}, state_json='{"a":[1]}', **fields) == general
    assert decode_state(general) == {"a": [1]}


def test_a_lifetime_rides_in_the_envelope_and_old_records_have_none() -> None:
    """``set_expiry``'s lifetime is one more field; a record written before it reads as the
    middleware's lifecycle (``None``), and the cookie's quick path does not drop it."""
    old = '{"v":1,"state":{"a":1},"created":1700000000,"expires":1700003600}'
    assert decode_state(old).lifetime is None
    assert type(decode_fields(old)[0]) is dict
    for lifetime in (0.0, 2592000.0):
        text = encode_state({"a": 1}, created=1700000000, expires=1700003600, lifetime=lifetime)
        assert json.loads(text)["lifetime"] == int(lifetime)
        assert decode_state(text).lifetime == lifetime
        state = decode_fields(text)[0]
        assert isinstance(state, StoredState) and state.lifetime == lifetime
    for bad in ('"1"', "-1", "true", "1e300"):
        with pytest.raises(DeserializationError, match="lifetime"):
            decode_state(f'{old[:-1]},"lifetime":{bad}}}')


def test_legacy_map_is_migrated_on_read() -> None:
    legacy = '{"k":"\\"value\\"","n":"1","obj":"{\\"a\\": 1}"}'
    assert decode_state(legacy) == {"k": "value", "n": 1, "obj": {"a": 1}}


def test_legacy_is_written_on_request() -> None:
    text = encode_state({"counter": 100, "user_id": "ferris"}, legacy=True)
    assert json.loads(text) == {"counter": "100", "user_id": '"ferris"'}
    assert decode_state(text) == {"counter": 100, "user_id": "ferris"}


def test_empty_object_is_an_empty_state() -> None:
    assert decode_state("{}") == {}


def test_unversioned_object_is_the_state() -> None:
    assert decode_state('{"a":1,"b":"x"}') == {"a": 1, "b": "x"}


@pytest.mark.parametrize(
    "raw",
    [
        "[]",
        '"x"',
        "null",
        "1",
        "",
        "{",
        b"\xff\xfe",
        '{"v":2,"state":{}}',
        '{"v":1.0,"state":{}}',
        '{"v":256,"state":{}}',
        '{"a":"not json"}',
        '{"a":NaN}',
        '{"a":Infinity}',
        '{"v":1,"state":{},"created":"x"}',
        '{"v":1,"state":{},"created":-5}',
        '{"v":1,"state":{},"expires":1e300}',
        "[" * 2048,
        '{"v":1,"state":{}}' + "x",
    ],
)
def test_undecodable_input_raises_deserialization_error(raw: str | bytes) -> None:
    with pytest.raises(DeserializationError):
        decode_state(raw)
    if isinstance(raw, str):  # the cookie store's reader refuses the same, with the same error
        with pytest.raises(DeserializationError):
            decode_fields(raw)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and objects of ``inner`` (a named function: hypothesis reads it to see it recurses)."""
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
    _containers,
    max_leaves=12,
)
_TIME = st.none() | st.integers(-5, 2**41) | st.floats(allow_nan=False) | st.text(max_size=2)
_ENVELOPE_KEYS = ("v", "state", "created", "expires", "user", "device", "lifetime", "x")


_COOKIE_ENVELOPE = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1.0, 2, True, "1"]),
        "state": st.dictionaries(st.text(max_size=4), _JSON) | _JSON,
        "created": _TIME,
        "expires": _TIME,
    }
)


@settings(max_examples=400, deadline=None)
@given(
    _COOKIE_ENVELOPE
    | st.dictionaries(
        st.sampled_from(_ENVELOPE_KEYS),
        st.one_of(st.just(1), _JSON, _TIME, st.dictionaries(st.text(max_size=4), _JSON)),
        max_size=6,
    ),
    st.sampled_from(["", " ", "\\ud800"]),
)
def test_decode_fields_reads_what_decode_state_reads(
    envelope: dict[str, object], tail: str
) -> None:
    text = json.dumps(envelope, separators=(",", ":"))
    if tail.strip():
        text = text.replace("{", '{"\\ud800":0,', 1) if text != "{}" else '{"\\ud800":0}'
    else:
        text += tail
    try:
        expected = decode_state(text)
    except DeserializationError:
        with pytest.raises(DeserializationError):
            decode_fields(text)
        return
    state, created, expires, user = decode_fields(text)
    assert state == expected and type(state) in (dict, StoredState)
    assert (created, expires, user) == (expected.created, expected.expires, expected.user)


def test_decode_fields_takes_the_cookie_envelope_without_a_stored_state() -> None:
    text = encode_state({"n": 1}, created=1700000000, expires=1700003600)
    state, created, expires, user = decode_fields(text)
    assert type(state) is dict and state == {"n": 1}
    assert (created, expires, user) == (1700000000, 1700003600, None)
    deep = encode_state({"n": [[[[1]]]] * 40}, created=1, expires=2)
    assert decode_fields(deep)[0] == decode_state(deep)
    too_deep = encode_state({"n": 1}, created=1, expires=2).replace(
        '"n":1', '"n":' + "[" * 200 + "]" * 200
    )
    with pytest.raises(DeserializationError):
        decode_fields(too_deep)


def test_pickle_is_never_deserialised() -> None:
    import pickle

    with pytest.raises(DeserializationError):
        decode_state(pickle.dumps({"a": 1}))


def test_tombstones_are_not_state() -> None:
    for successor in (None, "k" * 64):
        text = encode_tombstone(successor)
        assert read_tombstone(text) == (True, successor)
        with pytest.raises(DeserializationError):
            decode_state(text)
    assert read_tombstone(encode_state({"a": 1})) == (False, None)


def test_a_rotation_tombstone_says_when_and_only_a_rotation_does() -> None:
    text = encode_tombstone("k" * 64, 1_700_000_000.5, "ab" * 64)
    assert read_tombstone(text) == (True, "k" * 64)
    assert read_rotation(text) == (1_700_000_000.0, "ab" * 64)
    assert read_rotation(encode_tombstone("k" * 64)) is None, "a login renewal's"
    assert read_rotation(encode_tombstone(None)) is None
    assert read_rotation(encode_state({"a": 1})) is None


def test_when_the_key_was_issued_is_kept_and_read_back() -> None:
    """``issued`` (a renewal or rotation's time) goes through the envelope; absent, it is
    ``None`` and the fast readers still take the envelope."""
    text = encode_state({"a": 1}, created=10, expires=99, issued=50, state_json='{"a":1}')
    assert '"issued":50' in text
    state = decode_state(text)
    assert state.issued == 50.0 and state.created == 10.0 and state == {"a": 1}
    assert encode_state(state) == text
    plain = decode_state(encode_state({"a": 1}, created=10, expires=99))
    assert plain.issued is None
    assert decode_fields(text)[0] == {"a": 1}


def test_indexes_round_trip_in_the_envelope() -> None:
    text = encode_state({"a": 1}, created=1, expires=2, indexes={"oidc_sid": "s1", "gone": None})
    assert '"indexes":{"oidc_sid":"s1"}' in text  # a None value is taken out, not stored
    assert decode_state(text).indexes == {"oidc_sid": "s1"}
    assert decode_state(encode_state({"a": 1}, created=1, expires=2)).indexes is None


@pytest.mark.parametrize(
    "indexes", ['["s1"]', '{"oidc_sid":1}', '{"not a name":"s1"}', '{"sid":"a\\nb"}']
)
def test_indexes_that_no_write_makes_are_unreadable(indexes: str) -> None:
    with pytest.raises(DeserializationError):
        decode_state('{"v":1,"state":{},"indexes":' + indexes + "}")


@pytest.mark.parametrize("user", ["a\x00b", "x" * 256, "", "\ud800", "line\nbreak"])
def test_a_record_whose_user_bind_user_would_refuse_is_unreadable(user: str) -> None:
    """Issue 28 item 4: one rule for user ids, at ``bind_user`` and when reading a record (the
    fast path of plain envelopes and the full decoder alike)."""
    text = json.dumps({"v": 1, "state": {"a": 1}, "user": user, "created": 1, "expires": 2})
    with pytest.raises(DeserializationError, match="'user'"):
        decode_state(text)
    with pytest.raises(DeserializationError, match="'user'"):
        decode_fields(text)
    with pytest.raises(SessionInsertError):
        Session().bind_user(user)
    assert user_id_problem(user) is not None


def test_a_user_at_the_limit_reads_back() -> None:
    text = encode_state({"a": 1}, created=1, expires=2, user="é" * MAX_USER_ID)
    assert user_id_problem("é" * MAX_USER_ID) is None
    assert decode_state(text).user == decode_fields(text)[3] == "é" * MAX_USER_ID


def _depth(value: Any) -> int:
    """How deeply ``value``'s lists and objects nest (a scalar: 0), the plain recursive way."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _nest(value: Any, levels: int, shape: int) -> Any:
    for i in range(levels):
        value = [value, i] if (i + shape) % 2 else {"k": value, "n": [i]}
    return value


@settings(max_examples=200, deadline=None)
@given(st.integers(MAX_DEPTH - 4, MAX_DEPTH + 4), st.integers(0, 1), _JSON)
def test_too_deep_is_exactly_the_nesting_depth_beyond_max_depth(
    levels: int, shape: int, leaf: Any
) -> None:
    """Issue 30 item 1: the depth check went container by container in Python (costing more
    than the C encoder); it now goes a level at a time through C iterators, same answer."""
    value = {"a": 1, "deep": _nest(leaf, levels, shape), "wide": [[1], {"x": [2]}]}
    text = json.dumps(value)
    assert too_deep(value, text) is (_depth(value) > MAX_DEPTH)


def test_state_members_locate_each_value_in_a_compact_envelope() -> None:
    text = encode_state({"a": [1, {"b": "}"}], "c": "x,y", "d": {}})
    members = state_members(text)
    assert members is not None
    assert {k: text[s:e] for k, (s, e, _) in members.items()} == {
        "a": '[1,{"b":"}"}]',
        "c": '"x,y"',
        "d": "{}",
    }
    assert members["a"][2] == [1, {"b": "}"}]
    assert state_members(encode_state({})) == {}
    for other in ('{"v": 1, "state": {"a": 1}}', '{"a":1}', '{"v":1,"state":{"a":1 }}', ""):
        assert state_members(other) is None
