"""The NFC verification step on its own: the SUN message of a tap, checked in memory with
the keys the tag cache holds."""

from __future__ import annotations

import dataclasses

import pytest

from campaigns.payloads.keys import SunKeys
from campaigns.scanning.cache import SunTag
from campaigns.scanning.steps.base import ScanDraft
from campaigns.scanning.steps.nfc import NfcVerification, query_param
from tests.fixtures.ntag424 import Ntag424
from tests.fixtures.scanning import record, request, resolution


@pytest.mark.parametrize(
    ("query", "name", "expected"),
    [
        ("e=AB&c=CD", "e", "AB"),
        ("e=AB&c=CD", "c", "CD"),
        ("c=CD&e=AB&e=FF", "e", "AB"),  # the first wins
        ("xe=AB&ee=1", "e", None),  # whole names only
        ("e", "e", None),  # a name without "=" has no value
        ("e=", "e", ""),
        ("", "e", None),
        ("e=" + "A" * 500, "e", "A" * 65),  # bounded: longer than any SUN parameter
    ],
)
def test_query_param(query: str, name: str, expected: str | None) -> None:
    assert query_param(query, name) == expected


def sun_draft(device: Ntag424, query: str, *, opened: bool = True) -> ScanDraft:
    """A draft of a tap on ``device``'s tag; ``opened`` False: its keys did not unseal."""
    res = resolution()
    keys = SunKeys(meta_read=device.meta_read_key, file_read=device.file_read_key)
    sun = SunTag(res.campaign.organization_id, device.uid, b"sealed", keys if opened else None)
    tag = res.tag._replace(kind="nfc_sun", sun=sun)
    req = request(prefix="/n/", channel="nfc", query_string=query.encode())
    return ScanDraft(req, dataclasses.replace(res, tag=tag), "nfc")


def test_an_authentic_message_leaves_a_counter_to_accept() -> None:
    device = Ntag424.random()
    e, c = device.message(7)
    draft = sun_draft(device, f"e={e.lower()}&c={c}&utm_source=x")
    NfcVerification()(draft)
    assert (draft.nfc_counter, draft.nfc_verification) == (7, None)


@pytest.mark.parametrize("query", ["", "e=00&c=00", "c=&e=", "e=ZZ"])
def test_a_failed_message_is_invalid_without_a_counter(query: str) -> None:
    draft = sun_draft(Ntag424.random(), query)
    NfcVerification()(draft)
    assert (draft.nfc_counter, draft.nfc_verification) == (None, "invalid")


def test_keys_that_did_not_open_make_every_tap_invalid() -> None:
    device = Ntag424.random()
    draft = sun_draft(device, "e={}&c={}".format(*device.message(1)), opened=False)
    NfcVerification()(draft)
    assert (draft.nfc_counter, draft.nfc_verification) == (None, "invalid")


def test_other_tags_are_left_alone() -> None:
    draft = ScanDraft(request(query_string=b"e=00&c=00"), resolution(), "qr")
    NfcVerification()(draft)
    assert (draft.nfc_counter, draft.nfc_verification) == (None, None)


def test_counter_to_accept_only_while_undecided() -> None:
    assert record(nfc_counter=5).counter_to_accept == 5
    assert record(nfc_counter=5, nfc_verification="valid").counter_to_accept is None
    assert record(nfc_verification="invalid").counter_to_accept is None
