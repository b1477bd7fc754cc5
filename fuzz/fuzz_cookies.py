"""Fuzz the untrusted-input path: Cookie header parsing, unsealing, and state decoding.

Contract checked on every input:

* ``sessionware.cookies.find_cookies`` never raises; it returns at most 4 ``str`` values.
* ``sessionware.crypto.unseal`` never raises; it returns ``None`` or ``(str, index in the ring)``,
  and a mutated valid cookie never opens.
* ``sessionware.state.decode_state`` raises nothing but ``DeserializationError`` and otherwise
  returns a ``StoredState`` (a ``dict``) whose metadata are numbers or ``None`` and which
  ``check_value`` accepts (it can be stored again).

Run (coverage-guided, with atheris; ``pip install atheris``)::

    python fuzz/fuzz_cookies.py -max_total_time=3600 -rss_limit_mb=2048 fuzz/corpus

The seed corpus (valid cookies of every mode, valid states) is written on first run into the
corpus directory given. Without atheris, the same harness runs under hypothesis::

    python fuzz/fuzz_cookies.py --hypothesis 200000

CI runs a short form: ``tests/security/test_fuzz_short.py``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence

from sessionware.cookies import MAX_CANDIDATES, find_cookies
from sessionware.crypto import ContentSecurity, Key, seal, unseal
from sessionware.state import DeserializationError, StoredState, check_value, decode_state

MODES = list(ContentSecurity)
KEYS = [Key(bytes(range(64))), Key(bytes(range(64, 128)))]
NAMES = ["id", "__Host-id", "sid"]
SEED_STATES = [
    {},
    {"user_id": "alice", "cart": ["apple", 1, 2.5, None, True]},
    {"nested": {"a": {"b": [[], {}]}}, "é": "😀"},
]


def _seeds() -> list[tuple[ContentSecurity, str, str]]:
    """Valid sealed cookies: ``(mode, cookie name, sealed value)``."""
    seeds = []
    for mode in MODES:
        for name in NAMES:
            seeds.append((mode, name, seal(mode, KEYS[0], name, "A" * 64)))
            for state in SEED_STATES:
                plain = json.dumps({"v": 1, "state": state, "created": 1_700_000_000})
                seeds.append((mode, name, seal(mode, KEYS[1], name, plain)))
    return seeds


SEEDS = _seeds()


# --- the checks ---------------------------------------------------------------------------------


def check_find_cookies(headers: Sequence[bytes], name: str) -> list[str]:
    found = find_cookies(headers, name)
    assert isinstance(found, list) and len(found) <= MAX_CANDIDATES
    assert all(isinstance(value, str) and value for value in found)
    return found


def check_unseal(mode: ContentSecurity, name: str, sealed: str) -> tuple[str, int] | None:
    result = unseal(mode, KEYS, name, sealed)
    if result is not None:
        plain, index = result
        assert isinstance(plain, str) and index in (0, 1)
    return result


def check_decode(raw: str | bytes) -> StoredState | None:
    try:
        state = decode_state(raw)
    except DeserializationError:
        return None
    assert isinstance(state, StoredState) and isinstance(state, dict)
    for meta in (state.created, state.expires):
        assert meta is None or isinstance(meta, float)
    check_value(dict(state))  # what was read can be stored again (no NaN, no lone surrogate)
    return state


def check_mutation(seed: int, edits: bytes) -> None:
    """Apply ``edits`` to a valid cookie; unless nothing changed, it must not open."""
    mode, name, value = SEEDS[seed % len(SEEDS)]
    chars = list(value)
    for i in range(0, len(edits) - 2, 3):
        op, where, what = edits[i] % 4, edits[i + 1], edits[i + 2]
        pos = where % (len(chars) + 1)
        if op == 0 and chars:  # flip bits of one character (kept ASCII)
            at = pos % len(chars)
            chars[at] = chr((ord(chars[at]) ^ (what % 127 or 1)) % 128)
        elif op == 1:  # insert
            chars.insert(pos, chr(what))
        elif op == 2 and chars:  # delete
            del chars[pos % len(chars)]
        elif op == 3:  # truncate
            del chars[pos:]
    mutated = "".join(chars)
    result = check_unseal(mode, name, mutated)
    if mutated != value:
        assert result is None, f"a mutated {mode.name} cookie opened: {mutated!r}"
    else:
        assert result is not None


def check_pipeline(header: bytes, mode: ContentSecurity, name: str) -> None:
    """What the middleware does with the cookie store: parse, unseal each candidate, decode."""
    for value in check_find_cookies([header], name):
        opened = check_unseal(mode, name, value)
        if opened is not None:
            check_decode(opened[0])


# --- one input, from raw bytes ------------------------------------------------------------------


def one_input(data: bytes) -> None:
    """Dispatch one fuzz input (the first byte picks the target, mode and cookie name)."""
    if not data:
        return
    selector, body = data[0], data[1:]
    mode = MODES[selector % 3]
    name = NAMES[(selector // 3) % 3]
    target = (selector // 9) % 6
    if target == 0:
        check_find_cookies(body.split(b"\n"), name)
    elif target == 1:
        check_unseal(mode, name, body.decode("latin-1"))
    elif target == 2:
        check_unseal(mode, name, body.decode("utf-8", "surrogateescape"))
    elif target == 3:
        check_decode(body)
        check_decode(body.decode("utf-8", "surrogateescape"))
    elif target == 4:
        check_mutation(body[0] if body else 0, body[1:])
    else:
        check_pipeline(body, mode, name)


def write_corpus(directory: str) -> None:
    """Seed ``directory`` with valid inputs for every target (once)."""
    os.makedirs(directory, exist_ok=True)
    if os.listdir(directory):
        return
    count = 0
    for mode, name, value in SEEDS:
        selector = MODES.index(mode) + 3 * NAMES.index(name)
        header = f"a=1; {name}={value}; b=2".encode()
        for target, body in ((0, header), (1, value.encode()), (5, header)):
            with open(os.path.join(directory, f"seed-{count}"), "wb") as out:
                out.write(bytes([selector + 9 * target]) + body)
            count += 1
    for state in SEED_STATES:
        with open(os.path.join(directory, f"seed-{count}"), "wb") as out:
            out.write(bytes([27]) + json.dumps({"v": 1, "state": state}).encode())
        count += 1


def run_hypothesis(examples: int) -> None:
    """The harness under hypothesis, for machines without atheris."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.binary(max_size=4096))
    def fuzz(data: bytes) -> None:
        one_input(data)

    fuzz()


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[1] == "--hypothesis":
        examples = int(argv[2]) if len(argv) > 2 else 100_000
        run_hypothesis(examples)
        print(f"hypothesis: {examples} inputs, no contract violation")
        return
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install atheris, or use --hypothesis N")
    atheris.instrument_all()
    corpus = [arg for arg in argv[1:] if not arg.startswith("-")]
    if corpus:
        write_corpus(corpus[0])
    fuzz_one: Callable[[bytes], None] = one_input
    atheris.Setup(argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
