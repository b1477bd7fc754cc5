"""The short CI form of ``fuzz/fuzz_cookies.py``: a few thousand inputs through the same checks.

The long run (coverage-guided with atheris, or hypothesis with a large budget) is described in
the harness's docstring.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from hypothesis import given
from hypothesis import strategies as st

from tests.security.hypo import budget

_PATH = Path(__file__).resolve().parents[2] / "fuzz" / "fuzz_cookies.py"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_cookies", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_cookies", module)
    spec.loader.exec_module(module)
    return module


fuzz = _harness()


def test_seeds_are_valid_and_open() -> None:
    for mode, name, value in fuzz.SEEDS:
        assert fuzz.check_unseal(mode, name, value) is not None
        fuzz.check_pipeline(f"x=1; {name}={value}".encode(), mode, name)


@budget(2500)
@given(st.binary(max_size=2048))
def test_raw_inputs(data: bytes) -> None:
    fuzz.one_input(data)


@budget(1500)
@given(target=st.integers(0, 53), body=st.binary(max_size=1024))
def test_every_target(target: int, body: bytes) -> None:
    fuzz.one_input(bytes([target]) + body)


@budget(1500)
@given(seed=st.integers(0, 255), edits=st.binary(min_size=3, max_size=60))
def test_mutated_seeds(seed: int, edits: bytes) -> None:
    fuzz.check_mutation(seed, edits)


@budget(500)
@given(
    headers=st.lists(
        st.lists(
            st.sampled_from([b"id=", b";", b" ", b"=", b'"', b"%", b"%e9", b"\xff", b"x"])
            | st.binary(max_size=6),
            max_size=80,
        ).map(b"".join),
        max_size=4,
    )
)
def test_cookie_parser(headers: list[bytes]) -> None:
    for name in fuzz.NAMES:
        fuzz.check_find_cookies(headers, name)
