"""FastAPI integration: the session as a dependency, plain (``SessionDep``) or typed (``session_model``).

``SessionDep`` is actix's ``Session`` extractor: declare ``session: SessionDep`` in an endpoint,
HTTP or WebSocket, and get the request's ``Session``, already loaded (so it works with
``SessionMiddleware(lazy=True)`` too); ``session_dependency("admin")`` is the same for the
session of ``SessionMiddleware(name="admin")``. Both document in OpenAPI (``/docs``) how the
session's token travels: the cookie, or the header of a ``HeaderTransport``.
``session_model(User)`` validates the whole session as a pydantic model on the way in, for
endpoints that need, say, a signed-in user.

``CSRFProtected`` checks the session's CSRF token on one route, as ``CSRFMiddleware`` does for
every route: ``@app.post("/transfer", dependencies=[CSRFProtected])``. ``SessionAdminDep`` gives
the middleware's ``SessionAdmin`` (a user's sessions: list them, end them).

FastAPI is imported here and nowhere else in sessionware.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException
from fastapi.openapi.models import APIKey, APIKeyIn, HTTPBearer
from fastapi.openapi.models import SecurityBase as SecuritySchemeModel
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection, Request

from sessionware.admin import SessionAdmin, get_admin
from sessionware.csrf import SAFE_METHODS, by_header, verify_csrf_token
from sessionware.middleware import DEFAULT_NAME, get_session
from sessionware.session import Session
from sessionware.transport import CookieTransport, HeaderTransport, declared

__all__ = [
    "CSRFProtected",
    "SessionAdminDep",
    "SessionDep",
    "session_dependency",
    "session_model",
]

logger = logging.getLogger("sessionware")

M = TypeVar("M", bound=BaseModel)

_ADD_IT = (
    "add it to the app: `from sessionware import Key, SessionMiddleware` then"
    " `app.add_middleware(SessionMiddleware, store=..., key=...)`"
)


def _missing(found: object) -> str:
    if isinstance(found, dict):
        return (
            "the request's scope['session'] is a plain dict, which Starlette's own"
            " SessionMiddleware puts there, not sessionware's; " + _ADD_IT
        )
    return "sessionware.SessionMiddleware is not installed, so this request has no session; " + (
        _ADD_IT
    )


class _SessionScheme(SecurityBase):
    """The dependency that gives the session named ``name``, and the OpenAPI security scheme
    saying how its token travels: as the last ``SessionMiddleware(name=name)`` built in the
    process takes it (FastAPI builds the middleware at the app's first request, before it
    renders ``/openapi.json``), the session cookie before any is."""

    def __init__(self, name: str) -> None:
        self.name = self.scheme_name = name

    @property
    def model(self) -> SecuritySchemeModel:  # type: ignore[override]  # read as FastAPI renders
        return _scheme(self.name)

    async def __call__(self, connection: HTTPConnection) -> Session:
        """The request's (or WebSocket's) session, loaded from the store if that was deferred."""
        if self.name == DEFAULT_NAME:
            session = connection.scope.get(DEFAULT_NAME)
            if not isinstance(session, Session):
                raise RuntimeError(_missing(session))
        else:
            session = get_session(connection, self.name)
        return await session.load()


def _scheme(name: str) -> SecuritySchemeModel:
    """The OpenAPI security scheme of the session named ``name``: its first header transport
    (what an API client, and ``/docs``'s Authorize, must send), else its cookie."""
    found = declared(name)
    cookie_name = found.cookie_name if found else ("id" if name == DEFAULT_NAME else name)
    carried = found.transports if found else (CookieTransport(),)
    header = next((t for t in carried if isinstance(t, HeaderTransport)), None)
    if header is None:
        return _api_key(APIKeyIn.cookie, cookie_name, f"The {name!r} session's cookie.")
    scheme = "" if header.scheme is None else f"{header.scheme} "
    sent = f"`{header.name}: {scheme}<token>`"
    description = (
        f"The {name!r} session's token, sent as {sent}. A new token comes back in the"
        f" `{header.response_header}` response header (empty when the session ended); a request"
        " without a token starts a new session."
    )
    if any(isinstance(t, CookieTransport) for t in carried):
        description += f" Browsers send the session cookie `{cookie_name}` instead."
    if (
        header.scheme is not None
        and header.scheme.lower() == "bearer"
        and header.key == b"authorization"
    ):
        return HTTPBearer(description=description)
    if header.scheme is not None:
        description += f" In /docs, enter `{header.scheme} <token>` as the value."
    return _api_key(APIKeyIn.header, header.name, description)


def _api_key(where: APIKeyIn, name: str, description: str) -> APIKey:
    return APIKey.model_validate({"in": where, "name": name, "description": description})


_DEFAULT_SCHEME = _SessionScheme(DEFAULT_NAME)

SessionDep = Annotated[Session, Depends(_DEFAULT_SCHEME)]
"""The current ``Session``, for HTTP and WebSocket endpoints: ``session: SessionDep``.

Raises ``RuntimeError`` (a 500) naming the fix when ``SessionMiddleware`` is not installed.
OpenAPI shows how its token travels (the cookie, or a ``HeaderTransport``'s header).
"""


@functools.cache
def session_dependency(name: str = DEFAULT_NAME) -> Any:
    """The ``SessionDep`` of the session named ``name`` (``SessionMiddleware(name=name)``):
    ``AdminSession = session_dependency("admin")`` then ``session: AdminSession``.

    Type checkers cannot read a call as an annotation; for them, write
    ``if TYPE_CHECKING: AdminSession = Session`` and ``else: AdminSession =
    session_dependency("admin")``.
    """
    if name == DEFAULT_NAME:
        return SessionDep
    return Annotated[Session, Depends(_SessionScheme(name))]


async def _admin(connection: HTTPConnection) -> SessionAdmin:
    """The middleware's ``SessionAdmin`` (its store, clock and events)."""
    return get_admin(connection)


SessionAdminDep = Annotated[SessionAdmin, Depends(_admin)]
"""The ``SessionAdmin`` of the app's ``SessionMiddleware``: ``admin: SessionAdminDep`` lists and
ends sessions (a user's, or one by id) with the middleware's store, clock and ``on_event``."""


def session_model(model: type[M]) -> Any:
    """A dependency that validates the session's entries as ``model`` (a pydantic ``BaseModel``).

    ``CurrentUser = session_model(User)`` then ``user: CurrentUser`` in an endpoint gives a
    ``User`` built from the session (keys the model does not declare are ignored unless the model
    forbids extras). The instance is a copy: write through ``SessionDep`` to change the session.

    A session that does not fit the model is answered with ``401 Not authenticated`` (and a
    ``WWW-Authenticate: Cookie`` header), since the usual reason is "not signed in": a session
    missing required fields is logged at DEBUG; one whose values have the wrong shape (stale data
    from an older model, say) at WARNING, naming the fields but never their values.

    Type checkers cannot read a call as an annotation; for them, write
    ``if TYPE_CHECKING: CurrentUser = User`` and ``else: CurrentUser = session_model(User)``.
    """
    given: object = model
    if not (isinstance(given, type) and issubclass(given, BaseModel)):
        raise TypeError(f"session_model() takes a pydantic BaseModel subclass, not {model!r}")

    async def dependency(session: SessionDep) -> M:
        try:
            return model.model_validate(dict(session.entries()))
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            fields = ", ".join(".".join(map(str, e["loc"])) or "(root)" for e in errors)
            if all(e["type"] == "missing" for e in errors):
                logger.debug("session lacks %s for %s", fields, model.__name__)
            else:
                logger.warning("session does not fit %s: %s", model.__name__, fields)
            raise HTTPException(
                status_code=401,
                detail="Not authenticated",
                headers={"WWW-Authenticate": "Cookie"},
            ) from None

    dependency.__name__ = f"session_{model.__name__}"
    return Annotated[model, Depends(dependency)]


_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")
_CAN_PARSE_FORMS = importlib.util.find_spec("python_multipart") is not None


async def _csrf_protected(request: Request) -> None:
    """Refuse the request with 403 unless it carries the session's CSRF token (unsafe methods)."""
    session = request.scope.get("session")
    if not isinstance(session, Session):
        raise RuntimeError(_missing(session))
    if request.method in SAFE_METHODS or by_header(session):
        return
    await session.load()
    token = request.headers.get("x-csrf-token")
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if token is None and media in _FORMS and _CAN_PARSE_FORMS:
        # Starlette keeps the parsed form on the request: the endpoint's Form(...) reads it too.
        try:
            value = (await request.form()).get("csrf_token")
        except Exception:  # a malformed body holds no token
            value = None
        token = value if isinstance(value, str) else None
    if not verify_csrf_token(session, token):
        session.discard_changes()
        reason = "missing" if token is None else "incorrect"
        logger.info("CSRF token %s: %s %s refused", reason, request.method, request.url.path)
        raise HTTPException(status_code=403, detail=f"CSRF token {reason}")


CSRFProtected: Any = Depends(_csrf_protected)
"""A per-route CSRF check: ``dependencies=[CSRFProtected]`` (or ``_: Annotated[None, CSRFProtected]``).

Unsafe methods need the session's token (``sessionware.csrf_token``) in the ``X-CSRF-Token``
header or the ``csrf_token`` form field; otherwise 403 and the session is not saved.
"""
