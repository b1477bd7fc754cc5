"""The stored state format (SPEC §4.4): the v1 envelope and actix 0.11's legacy map, both ways."""

from __future__ import annotations

import json

import pytest

from sessionware.state import (
    DeserializationError,
    StoredState,
    decode_state,
    encode_state,
    encode_tombstone,
    read_tombstone,
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
