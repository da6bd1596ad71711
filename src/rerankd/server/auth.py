"""API keys, checked before a request's body is read, parsed or validated.

A request without a valid key costs a header compare and, on the rerank routes, a look
at the first bytes of its body to answer TEI clients in TEI's error shape. Everything
but the probes, /metrics, the API reference and the playground's static files needs the
key, so a route added later is closed until it is opened here.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from rerankd.server.errors import error_response

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics", "/docs", "/openapi.json", "/playground"})
# The playground's page holds no data: it asks for the key when the API answers 401.
OPEN_PREFIXES = ("/docs-assets/", "/playground/")
# Where a TEI client may call: its bodies have `texts` where the others have `documents`.
TEI_PATHS = frozenset({"/rerank", "/v1/rerank", "/v2/rerank"})
# Enough for the key that names the dialect behind a long query; the rest of the body is never read.
TEI_PEEK_BYTES = 64 * 1024
# Inside a JSON string a quote is escaped, so `"texts":` can only be a key. A key of a document object
# comes after the top-level `"documents":`, so the first of the two names the dialect.
_DIALECT_KEY = re.compile(rb'"(texts|documents)"\s*:')
UNAUTHORIZED = "missing or wrong API key; send 'Authorization: Bearer KEY'"


class ApiKeyMiddleware:
    """401 for a request to a closed route without one of `keys` as its bearer token."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self.keys = [key.encode() for key in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_open(_route_path(scope)) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        tei = _route_path(scope) in TEI_PATHS and _names_tei(await _peek(receive))
        response = error_response(401, UNAUTHORIZED, tei)
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        scheme, _, token = header.partition(b" ")
        # Every key is compared, so the time taken does not say which one came close.
        matches = [hmac.compare_digest(token, key) for key in self.keys]
        return scheme.lower() == b"bearer" and any(matches)


def _names_tei(prefix: bytes) -> bool:
    found = _DIALECT_KEY.search(prefix)
    return found is not None and found[1] == b"texts"


async def _peek(receive: Receive) -> bytes:
    """Up to TEI_PEEK_BYTES of the body; the server discards whatever is not read."""
    prefix = b""
    while len(prefix) < TEI_PEEK_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            break
        prefix += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return prefix


def _route_path(scope: Scope) -> str:
    """The path the routes match, as Starlette takes it: without the root path a proxy serves the app under."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root + "/") else path


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
