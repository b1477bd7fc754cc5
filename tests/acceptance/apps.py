"""The Starlette apps the acceptance suite drives: SPEC §7.1's handlers and a few probes."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.types import Scope

from sessionware import Key, SessionMiddleware, get_session


def _summary(request: Request) -> dict[str, Any]:
    session = get_session(request)
    return {"user_id": session.get("user_id"), "counter": session.get("counter", 0)}


async def index(request: Request) -> Response:
    await get_session(request).load()  # a no-op unless the middleware is lazy
    return JSONResponse(_summary(request))


async def do_something(request: Request) -> Response:
    session = await get_session(request).load()
    session.insert("counter", session.get("counter", 0) + 1)
    return JSONResponse(_summary(request))


async def count(request: Request) -> Response:
    return JSONResponse(_summary(request) | {"counter": get_session(request)["counter"]})


async def login(request: Request) -> Response:
    session = get_session(request)
    session.insert("user_id", (await request.json())["user_id"])
    session.renew()
    return JSONResponse(_summary(request))


async def logout(request: Request) -> Response:
    session = get_session(request)
    user_id = session.get("user_id")
    if user_id is None:
        return PlainTextResponse("Could not log out anonymous user")
    session.purge()
    return PlainTextResponse(f"Logged out: {user_id}")


# Probes used by the scenarios beyond SPEC §7.1.
async def get_all(request: Request) -> Response:
    return JSONResponse(dict(request.session))


async def set_values(request: Request) -> Response:
    request.session.update(await request.json())
    return JSONResponse(dict(request.session))


async def clear(request: Request) -> Response:
    request.session.clear()
    return JSONResponse({})


async def untouched(request: Request) -> Response:
    return PlainTextResponse("untouched")


async def contains(request: Request) -> Response:
    return PlainTextResponse(str("user_id" in request.session))


async def fail_after_write(request: Request) -> Response:
    request.session["written"] = True
    return PlainTextResponse("boom", status_code=int(request.query_params.get("status", 500)))


async def raise_after_write(request: Request) -> Response:
    request.session["written"] = True
    raise RuntimeError("handler failed")


async def redirect_after_write(request: Request) -> Response:
    request.session["written"] = True
    return Response(status_code=302, headers={"location": "/"})


async def with_own_cookie(request: Request) -> Response:
    request.session["k"] = "v"
    response = PlainTextResponse("ok", headers={"vary": "Accept-Encoding, Accept-Language"})
    response.set_cookie("foo", "bar")
    return response


async def append_to_cart(request: Request) -> Response:
    request.session.setdefault("cart", [])
    request.session["cart"].append((await request.json())["item"])
    return JSONResponse(request.session["cart"])


async def mutate_cart_in_place(request: Request) -> Response:
    request.session["cart"].append((await request.json())["item"])
    return JSONResponse(request.session["cart"])


async def purge(request: Request) -> Response:
    request.session.purge()
    return PlainTextResponse("purged")


async def renew(request: Request) -> Response:
    request.session.renew()
    return JSONResponse(dict(request.session))


class Guarded(Mount):
    """A mount that matches only for a logged-in session, like actix's ``fn_guard``."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if get_session(scope).get("user_id") is None:
            return Match.NONE, {}
        return super().matches(scope)


ROUTES = [
    Route("/", index),
    Route("/do_something", do_something, methods=["POST"]),
    Route("/count", count),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/all", get_all),
    Route("/set", set_values, methods=["POST"]),
    Route("/clear", clear, methods=["POST"]),
    Route("/untouched", untouched),
    Route("/contains", contains),
    Route("/fail", fail_after_write, methods=["POST"]),
    Route("/raise", raise_after_write, methods=["POST"]),
    Route("/redirect", redirect_after_write, methods=["POST"]),
    Route("/own-cookie", with_own_cookie, methods=["POST"]),
    Route("/cart", append_to_cart, methods=["POST"]),
    Route("/cart-in-place", mutate_cart_in_place, methods=["POST"]),
    Route("/purge", purge, methods=["POST"]),
    Route("/renew", renew, methods=["POST"]),
    Guarded("/protected", routes=[Route("/count", count)]),
]


def make_app(
    *, key: Key | None = None, routes: list[Any] | None = None, **options: Any
) -> Starlette:
    """A Starlette app with SessionMiddleware configured by ``options`` (store is required)."""
    if "keys" not in options:
        options["key"] = key or Key.generate()
    return Starlette(routes=routes or ROUTES, middleware=[Middleware(SessionMiddleware, **options)])
