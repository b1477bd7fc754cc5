"""sessionware: sessions for ASGI apps, with actix-session's design and wire format."""
