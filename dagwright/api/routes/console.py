"""The web console: static files shipped in the package (no CDN, works air-
gapped), served at /console/. It reads and acts through the REST API with
the token the user enters once (kept in the browser session)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "console"
PATH = "/console"
# The page runs only its own scripts and talks only to this API: an injected
# script (a job name, a log line) could not run, nor send the token anywhere.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def install(app: FastAPI) -> None:
    app.mount(f"{PATH}/static", StaticFiles(directory=STATIC / "static"), name="console")

    @app.get(PATH, include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse(f"{PATH}/")

    @app.get(f"{PATH}/", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            headers={"Cache-Control": "no-cache", "Content-Security-Policy": POLICY},
        )
