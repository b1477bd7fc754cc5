"""Checking a store URL's scheme at construction, so a typo fails there and not as 503s later."""

from __future__ import annotations

import difflib
from urllib.parse import urlsplit

__all__ = ["check_scheme"]


def check_scheme(
    store: str, url: str, schemes: tuple[str, ...], example: str, *, noun: str = "URL"
) -> None:
    """Raise ``ValueError`` unless ``url``'s scheme is one of ``schemes``; the message names the
    scheme found (never the rest of the URL, which may hold a password), the closest accepted
    one, and an ``example`` URL to copy."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme in schemes:
        return
    accepted = " or ".join(f"{name}://" for name in schemes)
    found = f"the scheme {scheme[:20]!r}" if scheme else "no scheme"
    close = difflib.get_close_matches(scheme, schemes, n=1, cutoff=0.6) if scheme else []
    hint = f": did you mean {close[0]}://?" if close else ""
    raise ValueError(
        f"{store} needs a {noun} like {example} ({accepted}); this one has {found}{hint}"
    )
