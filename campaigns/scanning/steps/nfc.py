"""Step "NFC verification": the SUN message of an NTAG 424 DNA tap, checked in memory."""

from __future__ import annotations

from campaigns.payloads.sun import verify_sun
from campaigns.scanning.steps.base import ScanDraft

#: Longest query parameter value looked at: ``e`` is 32 hex digits, ``c`` 16.
_MAX_VALUE = 64


def query_param(query_string: str, name: str) -> str | None:
    """The first value of ``name`` in a raw query string (``a=1&b=2``), not
    percent-decoded (SUN parameters are hex digits, which never need it), or None when
    absent. Values longer than 64 characters come back cut there (they are wrong anyway)."""
    prefix = name + "="
    for part in query_string.split("&"):
        if part.startswith(prefix):
            return part[len(prefix) : len(prefix) + _MAX_VALUE + 1]
    return None


class NfcVerification:
    """For a tag with SUN keys (kind ``nfc_sun``), verifies the ``e`` (PICCData) and ``c``
    (SDMMAC) query parameters with the tag's UID and keys held by the tag cache
    (:func:`campaigns.payloads.sun.verify_sun`, NXP AN12196). A message that fails
    (missing, truncated, non-hex, wrong MAC, another UID) sets ``nfc_verification``
    ``invalid``; an authentic one sets ``nfc_counter`` and leaves ``nfc_verification``
    None: the replay verdict (``valid`` or ``replayed``) needs the database and is decided
    by the scan writer's group commit (:func:`campaigns.scanning.nfc.accept_counter`).

    ``/s/{code}`` of such a tag carries no SUN message: an unverified tap, ``invalid``.
    Other tags are left alone (``nfc`` tags have a static URL: nothing to verify)."""

    name = "nfc verification"

    def __call__(self, draft: ScanDraft, /) -> None:
        tag = draft.resolution.tag
        if tag.kind != "nfc_sun":
            return
        if tag.sun is None or tag.sun.keys is None or draft.request.channel != "nfc":
            # No keys, or not /n/{code} (the URL the tag writes): an unverified tap.
            draft.nfc_verification = "invalid"
            return
        query = draft.request.query_string
        result = verify_sun(
            query_param(query, "e"), query_param(query, "c"), uid=tag.sun.uid, keys=tag.sun.keys
        )
        if result.verdict == "valid_mac":
            draft.nfc_counter = result.counter
        else:
            draft.nfc_verification = "invalid"
