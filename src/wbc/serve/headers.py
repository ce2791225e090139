"""Security headers on every response: the review station signs differentials, so its pages must not run
another site's script, be framed by another site (a hidden sign-off click) or have a download sniffed as a page."""

from __future__ import annotations

# The pages load their own script and styles only; cell pictures arrive as data: URLs, uploads are shown as blob:.
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
ALWAYS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]
# FastAPI's /docs and /redoc are built by inline script from a CDN: they keep the headers above, not the policy.
DOCS = ("/docs", "/redoc")


class SecurityHeaders:
    """Pure ASGI middleware (no response buffering, as Starlette's BaseHTTPMiddleware would do)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = ALWAYS if scope["path"].startswith(DOCS) else [*ALWAYS, (b"content-security-policy", PAGE_POLICY.encode())]

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []), *[(k, v) for k, v in extra if k not in names]]}
            await send(message)

        await self.app(scope, receive, with_headers)
