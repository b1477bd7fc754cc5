"""Helpers for the integration tests: form posts over tests/client.py's raw ASGI client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from tests.client import Response, request


async def post_form(
    app: Any, path: str, fields: Mapping[str, str], *, cookies: Mapping[str, str] | None = None
) -> Response:
    """POST ``fields`` as ``application/x-www-form-urlencoded``, as an HTML form does."""
    body = urlencode(fields).encode()

    async def with_body(scope: Any, receive: Any, send: Any) -> None:
        headers = [*scope["headers"], (b"content-type", b"application/x-www-form-urlencoded")]
        sent = False

        async def receive_body() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await app({**scope, "headers": headers}, receive_body, send)

    return await request(with_body, "POST", path, cookies=cookies)
