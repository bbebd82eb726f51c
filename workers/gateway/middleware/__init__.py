"""The gateway's ASGI middlewares, one per module."""
