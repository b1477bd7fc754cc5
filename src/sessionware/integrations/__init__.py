"""Framework integrations: FastAPI, Starlette drop-in, and more."""
