"""The Cookie header parser and the Set-Cookie lines (SPEC §2.2, §2.4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sessionware.config import CookieSettings
from sessionware.cookies import _find_cookies, find_cookies, removal_cookie, session_cookie


def find(*headers: str, name: str = "id") -> list[str]:
    return find_cookies([h.encode("latin-1") for h in headers], name)


def test_simple_and_neighbours() -> None:
    assert find("a=1; id=abc; b=2") == ["abc"]
    assert find("id=abc") == ["abc"]
    assert find("a=1") == []


def test_duplicates_in_header_order() -> None:
    assert find("id=A; id=B") == ["A", "B"]


def test_several_cookie_headers_are_joined() -> None:
    assert find("a=1", "id=abc") == ["abc"]


@pytest.mark.parametrize(
    "header",
    ['a="x; id=abc', "{bad}=1; id=abc", 'a="\\000"; id=abc', "; ; id=abc;", "x; id=abc"],
)
def test_malformed_neighbours_do_not_hide_the_session(header: str) -> None:
    assert find(header) == ["abc"]


def test_names_are_exact_and_case_sensitive() -> None:
    assert find("=id=forged; ID=x; Id=y; xid=z; id2=w") == []


def test_quotes_are_trimmed_and_percent_decoded() -> None:
    assert find('id="abc"') == ["abc"]
    assert find("id=a%2Fb%3D") == ["a/b="]


def test_empty_oversized_and_bad_utf8_values_are_skipped() -> None:
    assert find("id=", 'id=""') == []
    assert find("id=" + "a" * 5000) == []
    assert find("id=%ff%fe") == []


def test_candidates_are_capped() -> None:
    assert len(find("; ".join(f"id={i}" for i in range(50)))) == 4


def test_session_cookie_in_cookie_crate_order() -> None:
    settings = CookieSettings(domain="example.com")
    line = session_cookie(settings, "ab+c/d=", 60)
    assert (
        line
        == "id=ab+c%2Fd%3D; HttpOnly; SameSite=Lax; Secure; Path=/; Domain=example.com; Max-Age=60"
    )


def test_encoding_set() -> None:
    line = session_cookie(CookieSettings(), ' "#%(),/:;<=>?@[\\]^`{|}é+!', None)
    value = line.split("; ")[0][len("id=") :]
    assert value == "%20%22%23%25%28%29%2C%2F%3A%3B%3C%3D%3E%3F%40%5B%5C%5D%5E%60%7B%7C%7D%C3%A9+!"


def test_attributes_can_be_turned_off_and_partitioned_added() -> None:
    settings = CookieSettings(http_only=False, same_site="strict", partitioned=True)
    assert (
        session_cookie(settings, "v", None) == "id=v; SameSite=Strict; Secure; Path=/; Partitioned"
    )
    assert "SameSite" not in session_cookie(CookieSettings(same_site=None), "v", None)


def test_removal_cookie_carries_every_attribute() -> None:
    settings = CookieSettings(path="/app", domain="example.com", same_site="none", partitioned=True)
    line = removal_cookie(settings, now=1755770400 + 365 * 86400)
    assert line == (
        "id=; HttpOnly; SameSite=None; Secure; Path=/app; Domain=example.com; Max-Age=0;"
        " Expires=Thu, 21 Aug 2025 10:00:00 GMT; Partitioned"
    )


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.sampled_from(list('id=; \t"%2F3Dab\u00e9x')), max_size=30).map(
            lambda t: t.encode("latin-1")
        ),
        min_size=1,
        max_size=2,
    )
)
def test_the_fast_path_finds_what_the_general_parser_finds(headers: list[bytes]) -> None:
    assert find_cookies(headers, "id") == _find_cookies(headers, "id")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ab%2Fcd%3D", "ab/cd="),
        ("ab%2Fcd%3D%3D", "ab/cd=="),
        ("abcd%3D%3D%3D", "abcd==="),
        ("ab%3Dcd", "ab=cd"),
        ("ab%2fcd%3d", "ab/cd="),
        ("ab%41", "abA"),
    ],
)
def test_base64_escapes_decode_wherever_they_are(value: str, expected: str) -> None:
    header = f"x=1; id={value}".encode()
    assert find_cookies([header], "id") == [expected] == _find_cookies([header], "id")
