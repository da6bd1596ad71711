"""The API key check in front of the app: what a request without a key costs and sees."""

from __future__ import annotations

import asyncio
import json

import pytest

from rerankd.cache.redis_store import _redact
from rerankd.server.auth import TEI_PEEK_BYTES, ApiKeyMiddleware

CHUNK = 64 * 1024
BIG = 5 * 1024 * 1024


class Request:
    """One ASGI request fed to the middleware in chunks, counting what was read of its body."""

    def __init__(self, path: str, body: bytes = b"", headers: dict[str, str] | None = None, root_path: str = "") -> None:
        self.scope = {
            "type": "http", "method": "POST" if body else "GET", "path": path, "root_path": root_path,
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        }
        self.body = body
        self.read = 0
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        chunk = self.body[self.read : self.read + CHUNK]
        self.read += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": self.read < len(self.body)}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    def run(self, keys: tuple[str, ...] = ("k1", "k2")) -> bool:
        """Whether the request reached the app."""
        reached = []

        async def app(scope: dict, receive: object, send: object) -> None:
            reached.append(scope["path"])

        asyncio.run(ApiKeyMiddleware(app, keys)(self.scope, self.receive, self.send))
        return bool(reached)

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def json(self) -> dict:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def _body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_a_big_body_without_a_key_is_refused_after_a_peek_and_never_parsed() -> None:
    request = Request("/rerank", _body(query="q", documents=["x" * BIG]))
    assert not request.run()
    assert request.status == 401 and set(request.json) == {"message", "detail", "error"}
    assert (b"www-authenticate", b"Bearer") in request.sent[0]["headers"]
    assert request.read <= TEI_PEEK_BYTES + CHUNK < BIG


@pytest.mark.parametrize("path", ["/score", "/v1/score", "/info", "/v1/models", "/nope"])
def test_routes_that_no_tei_client_calls_read_none_of_the_body(path: str) -> None:
    request = Request(path, _body(text_1="q", text_2=["x" * BIG]))
    assert not request.run()
    assert request.status == 401 and request.read == 0


def test_tei_bodies_get_teis_401_shape_from_the_first_bytes() -> None:
    request = Request("/v1/rerank", _body(query="q" * 30_000, texts=["x" * BIG]))
    assert not request.run()
    assert set(request.json) == {"error", "error_type"} and "api key" in request.json["error"].lower()


@pytest.mark.parametrize(
    "body",
    [
        _body(query="q", documents=[{"texts": "a document object with a 'texts' field"}]),
        _body(query='a query that says "texts": in quotes', documents=["d"]),
        b"not json at all",
        b"",
    ],
)
def test_other_bodies_get_the_common_401_shape(body: bytes) -> None:
    request = Request("/rerank", body)
    assert not request.run()
    assert set(request.json) == {"message", "detail", "error"}


@pytest.mark.parametrize("header", ["Bearer k1", "bearer k2", "BEARER k1"])
def test_a_valid_key_reaches_the_app_with_the_body_unread(header: str) -> None:
    request = Request("/rerank", _body(query="q", documents=["d"]), {"Authorization": header})
    assert request.run() and request.read == 0


@pytest.mark.parametrize("header", ["", "Bearer k3", "Bearer", "Basic k1", "k1", "Bearer k1k2", "Bearer k1,k2"])
def test_a_wrong_key_is_refused(header: str) -> None:
    assert not Request("/rerank", _body(query="q", documents=["d"]), {"Authorization": header}).run()


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics", "/docs", "/openapi.json", "/docs-assets/x.css"])
def test_probes_metrics_and_the_api_reference_stay_open(path: str) -> None:
    assert Request(path).run()
    assert Request("/api" + path, root_path="/api").run()  # behind a proxy's root path too


@pytest.mark.parametrize("path", ["/playground", "/playground/playground.js"])
def test_the_playground_page_is_open_since_it_asks_for_the_key_itself(path: str) -> None:
    assert Request(path).run()
    assert Request("/api" + path, root_path="/api").run()


@pytest.mark.parametrize("path", ["/info", "/v1/models", "/rerank", "/healthz", "/docs-assets", "/api/health",
                                  "/playgrounds"])
def test_everything_else_needs_the_key(path: str) -> None:
    assert not Request(path).run()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://h:6379/0?password=secret", "redis://h:6379/0?password=***"),
        ("redis://user:secret@h:6379/0", "redis://***@h:6379/0"),
        ("rediss://:secret@h/1?db=2&ssl_password=secret", "rediss://***@h/1?db=2&ssl_password=***"),
        ("unix:///run/redis.sock?db=0&Password=secret", "unix:///run/redis.sock?db=0&Password=***"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_info_shows_the_redis_url_without_any_password(url: str, shown: str) -> None:
    assert _redact(url) == shown
