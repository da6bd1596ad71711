"""The web playground at /playground: a page to try requests on, shipped as plain files.

HTML, CSS and JavaScript from `static/`, with no CDN and no build step, so the page works
on air-gapped hosts. It calls the public API like any client (with the API key it asks
for after a 401), so it has no routes of its own beyond the files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

PATH = "/playground"
STATIC = Path(__file__).parent / "static"
# The page holds an API key once given one: it runs only its own files and talks only to this server.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'",
}


def add_playground(app: FastAPI) -> None:
    """The page at PATH, its CSS and JavaScript under PATH/ (relative URLs, so a proxy's prefix works)."""

    @app.get(PATH, include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get(PATH + "/", include_in_schema=False)
    async def with_slash() -> RedirectResponse:
        # The page's URLs are relative to PATH without the slash.
        return RedirectResponse("../playground")

    app.mount(PATH, StaticFiles(directory=STATIC), name="playground")
