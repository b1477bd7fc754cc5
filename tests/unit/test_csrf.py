"""csrf_token and verify_csrf_token on a standalone Session: the secret, the masking, rotation."""

from __future__ import annotations

import base64
import re

import pytest

from sessionware import CSRFMiddleware, Session, SessionStatus, csrf_token
from sessionware.csrf import CSRF_KEY, verify_csrf_token
from sessionware.session import CSRF_KEY as SESSION_CSRF_KEY
from tests.sessions import loaded as loaded_session
from tests.sessions import outcome


def test_the_secret_is_created_once_and_kept_under_the_reserved_key() -> None:
    session = Session()
    first = csrf_token(session)
    secret = session[CSRF_KEY]
    assert isinstance(secret, str) and len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert session.status is SessionStatus.CHANGED
    for _ in range(5):
        csrf_token(session)
    assert session[CSRF_KEY] == secret
    assert list(session) == [CSRF_KEY]
    assert verify_csrf_token(session, first)
    assert SESSION_CSRF_KEY == CSRF_KEY


def test_an_existing_secret_is_used_without_writing_the_session() -> None:
    seeded = Session()
    csrf_token(seeded)
    session = loaded_session(dict(seeded))
    token = csrf_token(session)
    assert session.status is SessionStatus.UNCHANGED
    assert verify_csrf_token(session, token)


def test_masked_tokens_differ_on_every_call_and_all_verify() -> None:
    session = Session()
    tokens = [csrf_token(session) for _ in range(50)]
    assert len(set(tokens)) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{86}", token) for token in tokens)
    assert all(verify_csrf_token(session, token) for token in tokens)
    assert all(session[CSRF_KEY] not in token for token in tokens)


def test_a_token_of_another_session_or_a_tampered_one_does_not_verify() -> None:
    mine, theirs = Session(), Session()
    token = csrf_token(mine)
    csrf_token(theirs)
    assert not verify_csrf_token(theirs, token)
    flipped = token[:50] + ("A" if token[50] != "A" else "B") + token[51:]
    assert not verify_csrf_token(mine, flipped)
    unmasked = mine[CSRF_KEY]
    for bad in (None, "", unmasked, token[:-1], token + "A", token[:85] + "=", "é" * 86):
        assert not verify_csrf_token(mine, bad)


def test_checking_a_session_without_a_secret_creates_nothing() -> None:
    session = loaded_session({"user": "ada"})
    assert not verify_csrf_token(session, csrf_token(Session()))
    assert CSRF_KEY not in session
    assert session.status is SessionStatus.UNCHANGED


@pytest.mark.parametrize("junk", [42, "short", "A" * 44, ["list"], None])
def test_a_malformed_stored_secret_is_replaced(junk: object) -> None:
    session = loaded_session({CSRF_KEY: junk})
    assert not verify_csrf_token(session, "A" * 86)
    token = csrf_token(session)
    assert session[CSRF_KEY] != junk
    assert verify_csrf_token(session, token)


def test_renew_drops_the_secret_so_old_tokens_stop_working() -> None:
    seeded = Session()
    old = csrf_token(seeded)
    session = loaded_session({**dict(seeded), "cart": [1]})
    session.renew()
    assert session.status is SessionStatus.RENEWED
    assert CSRF_KEY not in session and session["cart"] == [1]
    _, changes = outcome(session)
    assert CSRF_KEY in changes.removed
    assert not verify_csrf_token(session, old)
    new = csrf_token(session)
    assert verify_csrf_token(session, new) and not verify_csrf_token(seeded, new)
    assert session.status is SessionStatus.RENEWED


def test_renew_without_a_secret_removes_nothing() -> None:
    session = loaded_session({"a": 1})
    session.renew()
    assert outcome(session)[1].removed == frozenset()


def test_purge_ends_the_secret_with_the_session() -> None:
    session = loaded_session()
    token = csrf_token(session)
    session.purge()
    assert not verify_csrf_token(session, token)


def test_middleware_options_are_checked_at_construction() -> None:
    with pytest.raises(TypeError, match="list of paths"):
        CSRFMiddleware(None, exempt="/hooks/")
    with pytest.raises(ValueError, match="start with '/'"):
        CSRFMiddleware(None, exempt=["hooks/"])
    with pytest.raises(ValueError, match="header name"):
        CSRFMiddleware(None, header_name="X CSRF")
    with pytest.raises(ValueError, match="field_name"):
        CSRFMiddleware(None, field_name="")
    with pytest.raises(ValueError, match="max_body_size"):
        CSRFMiddleware(None, max_body_size=0)


def test_exempt_paths_ending_in_a_slash_are_prefixes_the_others_exact() -> None:
    middleware = CSRFMiddleware(None, exempt=["/hooks/", "/api/login"])
    assert middleware.exempts("/hooks/") and middleware.exempts("/hooks/github")
    assert middleware.exempts("/api/login")
    assert not middleware.exempts("/hooks") and not middleware.exempts("/api/login/x")
    assert not middleware.exempts("/api/loginx") and not middleware.exempts("/")
