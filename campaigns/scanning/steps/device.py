"""Step "device and bot": the device behind the scan, and why it is not a person."""

from __future__ import annotations

from campaigns.scanning.device import parse_device
from campaigns.scanning.record import BOT_REASONS
from campaigns.scanning.request import ScanRequest
from campaigns.scanning.steps.base import ScanDraft

__all__ = ["BOT_REASONS", "DeviceAndBot", "is_prefetch"]


def is_prefetch(request: ScanRequest) -> bool:
    """True for a speculative load no one asked for yet: ``Sec-Purpose: prefetch`` (or
    ``prefetch;prerender``; Fetch Standard, "Sec-Purpose" header, a structured list whose
    first token is ``prefetch``), ``Purpose: prefetch`` (Chrome before Sec-Purpose),
    ``X-Purpose: preview`` (Safari's Top Sites previews), ``X-Moz: prefetch`` (Firefox)."""
    if request.sec_purpose is not None and _first_token(request.sec_purpose) == "prefetch":
        return True
    if request.purpose is not None and _first_token(request.purpose) == "prefetch":
        return True
    if request.x_purpose is not None and _first_token(request.x_purpose) == "preview":
        return True
    return request.x_moz is not None and _first_token(request.x_moz) == "prefetch"


def _first_token(value: str) -> str:
    return value.split(";", 1)[0].split(",", 1)[0].strip().lower()


class DeviceAndBot:
    """Sets ``device_type``, ``os``, ``browser`` and ``bot_reason``, the first reason of
    :data:`BOT_REASONS` that applies: ``head`` for a method other than GET (link checkers
    and prefetchers send HEAD, people never do), ``prefetch`` (:func:`is_prefetch`), else
    the user agent's (:func:`campaigns.scanning.device.parse_device`)."""

    name = "device and bot"

    def __call__(self, draft: ScanDraft, /) -> None:
        request = draft.request
        device = parse_device(request.user_agent)
        draft.device_type, draft.os, draft.browser = device.device_type, device.os, device.browser
        if request.method != "GET":
            draft.bot_reason = "head"
        elif is_prefetch(request):
            draft.bot_reason = "prefetch"
        else:
            draft.bot_reason = device.bot_reason
