"""NFC tags through the API: ``nfc_sun`` creation and keys, ``/ndef``, ``/sdm``, and the
campaign option ``nfc_invalid_tap``."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httpx
import ndef
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.errors import documented_codes
from campaigns.payloads import keys as sun_keys
from campaigns.payloads.keys import SunKeys
from campaigns.payloads.ndef import NdefTooLarge
from campaigns.payloads.sun import verify_sun
from campaigns.services import tags as tag_service
from campaigns.settings import Settings
from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.http import assert_problem
from tests.fixtures.ntag424 import Ntag424

BASE_URL = "https://go.example.com"
TABLES = ("organizations", "campaigns", "tags", "scans")
HEX32 = re.compile(r"^[0-9A-F]{32}$")
UID = "04A1B2C3D4E5F6"


async def create_sun_tag(
    client: httpx.AsyncClient, org: Org, campaign_id: int, **nfc: str
) -> dict[str, Any]:
    return await make_tag(client, org, campaign_id, kind="nfc_sun", nfc={"uid": UID, **nfc})


async def stored_keys(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, org: Org, tag_id: int
) -> SunKeys:
    async with sessionmaker() as session:
        tag = await tag_service.get_tag(session, organization_id=org.id, tag_id=tag_id)
        return tag_service.tag_sun_keys(tag, secret_key=settings.secret_key)


async def _row(engine: AsyncEngine, sql: str, **params: Any) -> dict[str, Any]:
    async with engine.connect() as conn:
        return dict((await conn.execute(text(sql), params)).mappings().one())


# --- nfc_sun creation -------------------------------------------------------------------


async def test_create_sun_tag_with_derived_keys(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    campaign = await make_campaign(client, org)
    tag = await create_sun_tag(client, org, campaign["id"])
    assert tag["kind"] == "nfc_sun"
    nfc = tag["nfc"]
    assert set(nfc) == {"uid", "sdm_meta_read_key", "sdm_file_read_key", "key_derivation_version"}
    assert nfc["uid"] == UID
    assert nfc["key_derivation_version"] == 1
    assert HEX32.match(nfc["sdm_meta_read_key"]) and HEX32.match(nfc["sdm_file_read_key"])
    assert nfc["sdm_meta_read_key"] != nfc["sdm_file_read_key"]

    row = await _row(engine, "SELECT * FROM tags WHERE id = :id", id=tag["id"])
    assert row["nfc_uid"] == bytes.fromhex(UID)
    assert row["nfc_key_derivation_version"] == 1
    counters = await _row(
        engine, "SELECT count(*) AS n FROM nfc_counters WHERE tag_id = :id", id=tag["id"]
    )
    assert counters["n"] == 0  # no counter accepted before the first tap
    assert bytes.fromhex(nfc["sdm_meta_read_key"]) not in row["nfc_keys_encrypted"]
    assert bytes.fromhex(nfc["sdm_file_read_key"]) not in row["nfc_keys_encrypted"]

    # The keys are the documented derivation under the organization's master secret.
    org_row = await _row(engine, "SELECT * FROM organizations WHERE id = :id", id=org.id)
    master = sun_keys.unseal_master_secret(
        settings.secret_key, organization_id=org.id, sealed=org_row["nfc_master_secret_encrypted"]
    )
    derived = sun_keys.derive_sun_keys(master, bytes.fromhex(UID), version=1)
    assert derived.meta_read.hex().upper() == nfc["sdm_meta_read_key"]
    assert derived.file_read.hex().upper() == nfc["sdm_file_read_key"]

    # The keys handed out work for a tap, and are the ones stored for verification.
    keys = await stored_keys(sessionmaker, settings, org, tag["id"])
    assert keys == derived
    device = Ntag424(
        uid=bytes.fromhex(UID), meta_read_key=derived.meta_read, file_read_key=derived.file_read
    )
    for counter in (1, 2, 3):
        e, c = device.tap()
        result = verify_sun(e, c, uid=bytes.fromhex(UID), keys=keys)
        assert (result.verdict, result.counter) == ("valid_mac", counter)


async def test_master_secret_is_made_once_per_organization(
    client: httpx.AsyncClient, org: Org, other_org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    first = await create_sun_tag(client, org, campaign["id"])
    sealed = (await _row(engine, "SELECT * FROM organizations WHERE id = :id", id=org.id))[
        "nfc_master_secret_encrypted"
    ]
    second = await make_tag(
        client, org, campaign["id"], kind="nfc_sun", nfc={"uid": "04A1B2C3D4E5F7"}
    )
    again = (await _row(engine, "SELECT * FROM organizations WHERE id = :id", id=org.id))[
        "nfc_master_secret_encrypted"
    ]
    assert again == sealed
    assert second["nfc"]["sdm_meta_read_key"] != first["nfc"]["sdm_meta_read_key"]
    # Same UID in another organization: allowed, and other keys (another master secret).
    other_campaign = await make_campaign(client, other_org)
    other = await create_sun_tag(client, other_org, other_campaign["id"])
    assert other["nfc"]["sdm_meta_read_key"] != first["nfc"]["sdm_meta_read_key"]


async def test_concurrent_first_uses_agree_on_one_master_secret(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, settings: Settings
) -> None:
    """Two creations racing to make the organization's master secret: both tags' keys
    derive from the one that was stored."""
    campaign = await make_campaign(client, org)
    uids = [f"0400000000000{n}" for n in range(4)]
    responses = await asyncio.gather(
        *(
            client.post(
                f"/v1/campaigns/{campaign['id']}/tags",
                json={"kind": "nfc_sun", "nfc": {"uid": uid}},
                headers=org.headers,
            )
            for uid in uids
        )
    )
    assert [r.status_code for r in responses] == [201] * len(uids)
    org_row = await _row(engine, "SELECT * FROM organizations WHERE id = :id", id=org.id)
    master = sun_keys.unseal_master_secret(
        settings.secret_key, organization_id=org.id, sealed=org_row["nfc_master_secret_encrypted"]
    )
    for uid, response in zip(uids, responses, strict=True):
        derived = sun_keys.derive_sun_keys(master, bytes.fromhex(uid), version=1)
        assert response.json()["nfc"]["sdm_meta_read_key"] == derived.meta_read.hex().upper()
        assert response.json()["nfc"]["sdm_file_read_key"] == derived.file_read.hex().upper()


async def test_tags_made_under_v1_still_verify_after_a_v2_derivation(
    client: httpx.AsyncClient,
    org: Org,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    campaign = await make_campaign(client, org)
    old = await create_sun_tag(client, org, campaign["id"])
    assert old["nfc"]["key_derivation_version"] == 1

    def v2(master: bytes, uid: bytes) -> SunKeys:
        okm = sun_keys.DERIVATIONS[1](master, uid[::-1])
        return SunKeys(meta_read=okm.file_read, file_read=okm.meta_read)

    monkeypatch.setitem(sun_keys.DERIVATIONS, 2, v2)
    new = await make_tag(client, org, campaign["id"], kind="nfc_sun", nfc={"uid": "04000000000001"})
    assert new["nfc"]["key_derivation_version"] == 2

    for tag in (old, new):
        nfc = tag["nfc"]
        device = Ntag424(
            uid=bytes.fromhex(nfc["uid"]),
            meta_read_key=bytes.fromhex(nfc["sdm_meta_read_key"]),
            file_read_key=bytes.fromhex(nfc["sdm_file_read_key"]),
        )
        e, c = device.tap()
        keys = await stored_keys(sessionmaker, settings, org, tag["id"])
        assert verify_sun(e, c, uid=device.uid, keys=keys).verdict == "valid_mac"
    got = await client.get(f"/v1/tags/{old['id']}", headers=org.headers)
    assert got.json()["nfc"] == {"uid": UID, "key_derivation_version": 1}


async def test_create_sun_tag_with_supplied_keys(
    client: httpx.AsyncClient,
    org: Org,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    device = Ntag424.random()
    meta, file = device.meta_read_key.hex(), device.file_read_key.hex()
    campaign = await make_campaign(client, org)
    tag = await make_tag(
        client,
        org,
        campaign["id"],
        kind="nfc_sun",
        nfc={"uid": device.uid.hex(), "sdm_meta_read_key": meta, "sdm_file_read_key": file},
    )
    assert tag["nfc"] == {
        "uid": device.uid.hex().upper(),
        "sdm_meta_read_key": meta.upper(),
        "sdm_file_read_key": file.upper(),
        "key_derivation_version": None,
    }
    org_row = await _row(engine, "SELECT * FROM organizations WHERE id = :id", id=org.id)
    assert org_row["nfc_master_secret_encrypted"] is None  # not needed, not made
    keys = await stored_keys(sessionmaker, settings, org, tag["id"])
    e, c = device.tap()
    assert verify_sun(e, c, uid=device.uid, keys=keys).verdict == "valid_mac"


async def test_keys_never_appear_after_creation(
    client: httpx.AsyncClient, org: Org, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    campaign = await make_campaign(client, org)
    tag = await create_sun_tag(client, org, campaign["id"])
    secrets_hex = [tag["nfc"]["sdm_meta_read_key"], tag["nfc"]["sdm_file_read_key"]]
    responses = [
        await client.get(f"/v1/tags/{tag['id']}", headers=org.headers),
        await client.get(f"/v1/campaigns/{campaign['id']}/tags", headers=org.headers),
        await client.patch(f"/v1/tags/{tag['id']}", json={"label": "door"}, headers=org.headers),
        await client.get(f"/v1/tags/{tag['id']}/sdm", headers=org.headers),
        await client.get("/metrics"),
    ]
    expected_nfc = {"uid": UID, "key_derivation_version": 1}
    assert responses[0].json()["nfc"] == expected_nfc
    assert responses[1].json()["items"][0]["nfc"] == expected_nfc
    assert responses[2].json()["nfc"] == expected_nfc
    for response in responses:
        assert response.status_code == 200, response.text
        for secret in secrets_hex:
            assert secret.lower() not in response.text.lower()
    for secret in secrets_hex:
        assert secret.lower() not in caplog.text.lower()


async def test_a_plain_tag_has_no_nfc_member(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], kind="nfc")
    assert tag["nfc"] is None
    got = await client.get(f"/v1/tags/{tag['id']}", headers=org.headers)
    assert got.json() == tag


BAD_SUN_BODIES = [
    pytest.param({"kind": "nfc_sun"}, id="missing-nfc"),
    pytest.param({"kind": "nfc_sun", "nfc": None}, id="nfc-null"),
    pytest.param({"kind": "nfc_sun", "nfc": {}}, id="missing-uid"),
    pytest.param({"kind": "nfc_sun", "nfc": {"uid": "04A1B2C3D4E5"}}, id="uid-short"),
    pytest.param({"kind": "nfc_sun", "nfc": {"uid": "04A1B2C3D4E5F6A7"}}, id="uid-long"),
    pytest.param({"kind": "nfc_sun", "nfc": {"uid": "04A1B2C3D4E5FG"}}, id="uid-not-hex"),
    pytest.param({"kind": "nfc_sun", "nfc": {"uid": "04 A1B2C3D4E5F"}}, id="uid-space"),
    pytest.param({"kind": "nfc_sun", "nfc": {"uid": 4}}, id="uid-number"),
    pytest.param(
        {"kind": "nfc_sun", "nfc": {"uid": UID, "sdm_meta_read_key": "AB" * 16}},
        id="one-key-only",
    ),
    pytest.param(
        {
            "kind": "nfc_sun",
            "nfc": {"uid": UID, "sdm_meta_read_key": "AB" * 15, "sdm_file_read_key": "CD" * 16},
        },
        id="key-short",
    ),
    pytest.param(
        {
            "kind": "nfc_sun",
            "nfc": {"uid": UID, "sdm_meta_read_key": "AB" * 16, "sdm_file_read_key": "XY" * 16},
        },
        id="key-not-hex",
    ),
    pytest.param(
        {"kind": "nfc_sun", "nfc": {"uid": UID, "sdm_master_key": "AB" * 16}}, id="unknown-key"
    ),
    pytest.param({"kind": "qr", "nfc": {"uid": UID}}, id="nfc-on-qr"),
    pytest.param({"kind": "nfc", "nfc": {"uid": UID}}, id="nfc-on-plain-nfc"),
]


@pytest.mark.parametrize("body", BAD_SUN_BODIES)
async def test_bad_sun_tag_body_is_422_and_changes_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any]
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, *TABLES)
    response = await client.post(
        f"/v1/campaigns/{campaign['id']}/tags", json=body, headers=org.headers
    )
    problem = assert_problem(response, 422, "validation_error")
    assert all(error["loc"][:2] == ["body", "nfc"] for error in problem["errors"]), problem
    for value in ("AB" * 15, "CD" * 16, "XY" * 16):
        assert value not in response.text
    assert await table_snapshot(engine, *TABLES) == before


async def test_uid_is_unique_per_organization(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    await create_sun_tag(client, org, campaign["id"])
    before = await table_snapshot(engine, *TABLES)
    for uid in (UID, UID.lower()):
        response = await client.post(
            f"/v1/campaigns/{campaign['id']}/tags",
            json={"kind": "nfc_sun", "nfc": {"uid": uid}},
            headers=org.headers,
        )
        assert_problem(response, 409, "nfc_uid_taken")
    assert await table_snapshot(engine, *TABLES) == before


# --- GET /v1/tags/{id}/ndef -------------------------------------------------------------


async def test_ndef_json_for_a_plain_tag(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], kind="nfc")
    response = await client.get(f"/v1/tags/{tag['id']}/ndef?format=json", headers=org.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    url = f"{BASE_URL}/s/{tag['code']}"
    assert body["url"] == url == tag["short_url"]
    message = bytes.fromhex(body["ndef_hex"])
    tail = f"go.example.com/s/{tag['code']}".encode()
    assert message == bytes([0xD1, 0x01, 1 + len(tail), 0x55, 0x04]) + tail
    (record,) = ndef.message_decoder(message)
    assert record.iri == url
    assert body["tlv_hex"] == f"03{len(message):02X}{message.hex().upper()}FE"
    assert body["ndef_hex"] == message.hex().upper()
    assert (body["size_bytes"], body["capacity_bytes"], body["chip"]) == (
        len(message),
        144,
        "ntag213",
    )


@pytest.mark.parametrize(
    ("chip", "capacity"), [("ntag213", 144), ("ntag215", 496), ("ntag216", 872)]
)
async def test_ndef_capacity_per_chip(
    client: httpx.AsyncClient, org: Org, chip: str, capacity: int
) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], kind="nfc")
    response = await client.get(f"/v1/tags/{tag['id']}/ndef?chip={chip}", headers=org.headers)
    assert response.status_code == 200, response.text
    assert (response.json()["chip"], response.json()["capacity_bytes"]) == (chip, capacity)


async def test_ndef_bin_and_hex(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], kind="nfc")
    as_json = (await client.get(f"/v1/tags/{tag['id']}/ndef", headers=org.headers)).json()
    binary = await client.get(f"/v1/tags/{tag['id']}/ndef?format=bin", headers=org.headers)
    assert binary.status_code == 200
    assert binary.headers["content-type"] == "application/octet-stream"
    assert binary.content == bytes.fromhex(as_json["ndef_hex"])
    as_hex = await client.get(f"/v1/tags/{tag['id']}/ndef?format=hex", headers=org.headers)
    assert as_hex.headers["content-type"].startswith("text/plain")
    assert as_hex.text == as_json["ndef_hex"]


async def test_ndef_with_android_application_record(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], kind="nfc")
    response = await client.get(
        f"/v1/tags/{tag['id']}/ndef?format=bin&aar=com.example.shop", headers=org.headers
    )
    uri, aar = ndef.message_decoder(response.content)
    assert uri.iri == tag["short_url"]
    assert (aar.type, aar.data) == ("urn:nfc:ext:android.com:pkg", b"com.example.shop")


async def test_ndef_too_large_for_the_chip(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], kind="nfc")
    package = "com." + "a" * 150
    url = f"/v1/tags/{tag['id']}/ndef?aar={package}"
    expected_size = len(tag["short_url"]) - len("https://") + 5 + 3 + 15 + len(package) + 3
    response = await client.get(url + "&chip=ntag213", headers=org.headers)
    problem = assert_problem(response, 422, "ndef_too_large")
    assert (problem["size_bytes"], problem["capacity_bytes"]) == (expected_size, 144)
    fits = await client.get(url + "&chip=ntag215&format=json", headers=org.headers)
    assert fits.status_code == 200
    assert len(bytes.fromhex(fits.json()["tlv_hex"])) == expected_size


@pytest.mark.parametrize(
    "query",
    ["format=png", "chip=ntag424", "chip=", "aar=not%20a%20package", "aar=shop", "aar=1.x"],
)
async def test_ndef_bad_parameters_are_422(client: httpx.AsyncClient, org: Org, query: str) -> None:
    campaign = await make_campaign(client, org)
    tag = await make_tag(client, org, campaign["id"], kind="nfc")
    response = await client.get(f"/v1/tags/{tag['id']}/ndef?{query}", headers=org.headers)
    assert_problem(response, 422, "validation_error")


async def test_ndef_of_a_sun_tag_points_to_sdm(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await create_sun_tag(client, org, campaign["id"])
    response = await client.get(f"/v1/tags/{tag['id']}/ndef", headers=org.headers)
    problem = assert_problem(response, 422, "sun_tag_uses_sdm")
    assert f"/v1/tags/{tag['id']}/sdm" in problem["detail"]


@pytest.mark.parametrize("route", ["ndef", "sdm"])
async def test_nfc_routes_of_another_organizations_tag_are_404(
    client: httpx.AsyncClient, org: Org, other_org: Org, route: str
) -> None:
    campaign = await make_campaign(client, org)
    tag = await create_sun_tag(client, org, campaign["id"])
    response = await client.get(f"/v1/tags/{tag['id']}/{route}", headers=other_org.headers)
    assert_problem(response, 404, "tag_not_found")
    response = await client.get(f"/v1/tags/987654/{route}", headers=org.headers)
    assert_problem(response, 404, "tag_not_found")
    response = await client.get(f"/v1/tags/{tag['id']}/{route}")
    assert response.status_code == 401


# --- GET /v1/tags/{id}/sdm --------------------------------------------------------------


async def test_sdm_settings_of_a_sun_tag(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    tag = await create_sun_tag(client, org, campaign["id"])
    response = await client.get(f"/v1/tags/{tag['id']}/sdm", headers=org.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    template = f"{BASE_URL}/n/{tag['code']}?e={'0' * 32}&c={'0' * 16}"
    assert body["url_template"] == template
    assert body["uid"] == UID
    file = bytes.fromhex(body["ndef_file_hex"])
    assert int.from_bytes(file[:2], "big") == len(file) - 2
    (record,) = ndef.message_decoder(file[2:])
    assert record.iri == template
    assert file[5:7] == bytes([0x55, 0x04])
    # 7 = first URL byte after the identifier code; "go.example.com/n/CODE?e=" is 24 bytes.
    assert body["picc_data_offset"] == 7 + len(f"go.example.com/n/{tag['code']}?e=")
    assert body["sdm_mac_offset"] == body["picc_data_offset"] + 32 + len("&c=")
    assert body["sdm_mac_input_offset"] == body["sdm_mac_offset"]
    assert body["key_numbers"] == {"app_master": 0, "sdm_meta_read": 2, "sdm_file_read": 1}
    for key in (tag["nfc"]["sdm_meta_read_key"], tag["nfc"]["sdm_file_read_key"]):
        assert key not in response.text


async def test_sdm_of_a_tag_that_is_not_sun_is_422(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org)
    for kind in ("qr", "nfc"):
        tag = await make_tag(client, org, campaign["id"], kind=kind)
        response = await client.get(f"/v1/tags/{tag['id']}/sdm", headers=org.headers)
        assert_problem(response, 422, "not_sun_tag")


# --- campaigns: nfc_invalid_tap ---------------------------------------------------------


async def test_nfc_invalid_tap_defaults_to_flag_and_can_be_set(
    client: httpx.AsyncClient, org: Org
) -> None:
    campaign = await make_campaign(client, org)
    assert campaign["nfc_invalid_tap"] == "flag"
    blocking = await make_campaign(client, org, slug="blocking", nfc_invalid_tap="block")
    assert blocking["nfc_invalid_tap"] == "block"
    got = await client.get(f"/v1/campaigns/{blocking['id']}", headers=org.headers)
    assert got.json()["nfc_invalid_tap"] == "block"
    patched = await client.patch(
        f"/v1/campaigns/{campaign['id']}", json={"nfc_invalid_tap": "block"}, headers=org.headers
    )
    assert patched.status_code == 200
    assert patched.json()["nfc_invalid_tap"] == "block"
    listed = await client.get("/v1/campaigns", headers=org.headers)
    assert {c["nfc_invalid_tap"] for c in listed.json()["items"]} == {"block"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"nfc_invalid_tap": "maybe"}, "validation_error"),
        ({"nfc_invalid_tap": "BLOCK"}, "validation_error"),
        ({"nfc_invalid_tap": 1}, "validation_error"),
        ({"nfc_invalid_tap": None}, "nfc_invalid_tap_required"),
    ],
)
async def test_bad_nfc_invalid_tap_is_422_and_changes_nothing(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, body: dict[str, Any], code: str
) -> None:
    campaign = await make_campaign(client, org)
    before = await table_snapshot(engine, "campaigns")
    response = await client.patch(f"/v1/campaigns/{campaign['id']}", json=body, headers=org.headers)
    assert_problem(response, 422, code)
    if code == "validation_error":
        created = await client.post(
            "/v1/campaigns",
            json={"name": "x", "destination_url": "https://e.example.com", **body},
            headers=org.headers,
        )
        assert_problem(created, 422, code)
    assert await table_snapshot(engine, "campaigns") == before


@pytest.mark.parametrize(
    "assignment",
    [
        "kind = 'qr'",
        "nfc_uid = NULL",
        "nfc_keys_encrypted = NULL",
        "nfc_uid = '\\x04a1b2'::bytea",
    ],
)
async def test_the_database_refuses_inconsistent_nfc_columns(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, assignment: str
) -> None:
    from sqlalchemy.exc import IntegrityError

    campaign = await make_campaign(client, org)
    tag = await create_sun_tag(client, org, campaign["id"])
    with pytest.raises(IntegrityError, match="ck_tags_nfc"):
        async with engine.begin() as conn:
            await conn.execute(text(f"UPDATE tags SET {assignment} WHERE id = {tag['id']}"))  # noqa: S608


@pytest.mark.parametrize("counter", [16777216, -1])
async def test_the_database_refuses_a_counter_out_of_24_bits(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, counter: int
) -> None:
    from sqlalchemy.exc import IntegrityError

    campaign = await make_campaign(client, org)
    tag = await create_sun_tag(client, org, campaign["id"])
    with pytest.raises(IntegrityError, match="ck_nfc_counters_last_counter_range"):
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO nfc_counters (tag_id, last_counter) VALUES (:id, :counter)"),
                {"id": tag["id"], "counter": counter},
            )
    assert await table_snapshot(engine, "nfc_counters") == {"nfc_counters": []}


async def test_sdm_file_too_large_for_the_tag_is_a_documented_422(
    client: httpx.AsyncClient, org: Org, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A base URL so long that the SDM file passes the NTAG 424 DNA's 256 bytes makes
    ``/sdm`` answer 422 ``ndef_too_large``: the operation declares it."""
    campaign = await make_campaign(client, org)
    tag = await create_sun_tag(client, org, campaign["id"])
    async with sessionmaker() as session:
        with pytest.raises(NdefTooLarge) as caught:
            await tag_service.tag_sdm(
                session,
                organization_id=org.id,
                tag_id=tag["id"],
                origin="https://" + "x" * 200 + ".example.com",
            )
    assert caught.value.code == "ndef_too_large"
    assert caught.value.members["capacity_bytes"] == 256
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/tags/{tag_id}/sdm"]["get"]
    assert "ndef_too_large" in documented_codes(operation["responses"].values())
