"""The baseline for benchmarks/scan_redirect.py: a bare FastAPI endpoint that answers a
constant 302, with the same headers as the real scan route and nothing else."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

app = FastAPI()
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@app.get("/s/{code}")
async def scan(code: str) -> RedirectResponse:
    return RedirectResponse(
        "https://shop.example.com/landing?utm_medium=qr&pcid=constant", 302, headers=_HEADERS
    )
