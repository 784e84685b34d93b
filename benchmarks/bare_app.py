"""The baselines for benchmarks/scan_redirect.py: endpoints that answer a constant 302
with the same headers as the real scan route and nothing else.

``app`` is a bare FastAPI route; ``raw_app`` a bare ASGI callable (no framework, no
routing): the ceiling of what uvicorn can answer on this machine.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

app = FastAPI()
_LOCATION = "https://shop.example.com/landing?utm_medium=qr&pcid=constant"
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@app.get("/s/{code}")
@app.get("/n/{code}")  # NFC taps (benchmarks/scan_redirect.py --nfc); the query is ignored
async def scan(code: str) -> RedirectResponse:
    return RedirectResponse(_LOCATION, 302, headers=_HEADERS)


_RAW_START = {
    "type": "http.response.start",
    "status": 302,
    "headers": [
        (b"location", _LOCATION.encode()),
        *((k.lower().encode(), v.encode()) for k, v in _HEADERS.items()),
        (b"content-length", b"0"),
    ],
}
_RAW_BODY = {"type": "http.response.body", "body": b""}


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """ASGI 3 application: 302 to a constant URL for every HTTP request."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(_RAW_START)
    await send(_RAW_BODY)
