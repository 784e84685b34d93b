"""NFC taps through the short-link fast path: ``GET /n/{code}?e=&c=`` of NTAG 424 DNA
tags, SUN verification in memory, the replay verdict from the group commit, the
campaign's ``nfc_invalid_tap`` policy and the stats figures."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Org, make_campaign, make_tag, table_snapshot
from tests.fixtures.ntag424 import Ntag424
from tests.fixtures.user_agents import FACEBOOK_PREVIEW, IPHONE_SAFARI

#: NXP AN12196 Rev. 1.5 SUN example: all-zero keys, UID 04DE5F1EACC040, counter 61.
AN12196_UID = "04DE5F1EACC040"
AN12196_E = "EF963FF7828658A599F3041510671E88"
AN12196_C = "94EED9EE65337086"
ZERO_KEY = "00" * 16
PHONE = {"user-agent": IPHONE_SAFARI}


async def create_sun_tag(
    client: httpx.AsyncClient, org: Org, campaign_id: int, device: Ntag424, label: str = "door"
) -> dict[str, Any]:
    """An ``nfc_sun`` tag personalised with ``device``'s UID and keys."""
    return await make_tag(
        client,
        org,
        campaign_id,
        kind="nfc_sun",
        label=label,
        nfc={
            "uid": device.uid.hex().upper(),
            "sdm_meta_read_key": device.meta_read_key.hex().upper(),
            "sdm_file_read_key": device.file_read_key.hex().upper(),
        },
    )


async def tap(client: httpx.AsyncClient, code: str, query: str) -> httpx.Response:
    return await client.get(f"/n/{code}?{query}", headers=PHONE)


def sun_query(e: str, c: str) -> str:
    return f"e={e}&c={c}"


async def taps(engine: AsyncEngine) -> list[tuple[str, int | None, str | None]]:
    """``(channel, nfc_counter, nfc_verification)`` of every scan, in order."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT channel, nfc_counter, nfc_verification FROM scans ORDER BY id")
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def last_counter(engine: AsyncEngine, tag_id: int) -> int | None:
    async with engine.connect() as conn:
        value = await conn.scalar(
            text("SELECT last_counter FROM nfc_counters WHERE tag_id = :id"), {"id": tag_id}
        )
        return None if value is None else int(value)


def flip(hex_text: str, bit: int) -> str:
    """``hex_text`` with one bit flipped (bit 0 = lowest bit of the last byte)."""
    value = int(hex_text, 16) ^ (1 << bit)
    return f"{value:0{len(hex_text)}X}"


# --- the AN12196 vector ------------------------------------------------------------------


@pytest.mark.parametrize("case", [str.upper, str.lower])
async def test_an12196_vector_is_a_valid_tap(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, case: Any
) -> None:
    campaign = await make_campaign(client, org, slug="summer")
    tag = await make_tag(
        client,
        org,
        campaign["id"],
        kind="nfc_sun",
        label="door",
        nfc={"uid": AN12196_UID, "sdm_meta_read_key": ZERO_KEY, "sdm_file_read_key": ZERO_KEY},
    )
    response = await tap(client, tag["code"], sun_query(case(AN12196_E), case(AN12196_C)))
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    assert location.netloc == "shop.example.com"
    query = parse_qs(location.query)
    assert query["utm_medium"] == ["nfc"]
    assert query["utm_campaign"] == ["summer"]
    assert await taps(engine) == [("nfc", 61, "valid")]
    assert await last_counter(engine, tag["id"]) == 61
    # The same message again: a replay.
    again = await tap(client, tag["code"], sun_query(AN12196_E, AN12196_C))
    assert again.status_code == 302
    assert (await taps(engine))[1] == ("nfc", 61, "replayed")


# --- verdicts under both policies ----------------------------------------------------------


@pytest.mark.parametrize("policy", ["flag", "block"])
async def test_tap_verdicts_under_each_policy(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine, policy: str
) -> None:
    campaign = await make_campaign(client, org, nfc_invalid_tap=policy)
    device = Ntag424.random()
    tag = await create_sun_tag(client, org, campaign["id"], device)
    other_device = Ntag424.random()  # another tag of the organization, its own keys
    await create_sun_tag(client, org, campaign["id"], other_device, label="other")
    # Same keys, another UID: a cloned key set does not make another chip's message valid.
    clone = Ntag424(b"\x04" + bytes(6), device.meta_read_key, device.file_read_key)
    code = tag["code"]

    m1, m2, m3 = device.tap(), device.tap(), device.tap()
    m10 = device.message(10)
    e5, c5 = device.message(5)
    cases: list[tuple[str, str, int | None, str]] = [
        # (what, query, counter stored, verdict)
        ("first", sun_query(*m1), 1, "valid"),
        ("second", sun_query(*m2), 2, "valid"),
        ("third", sun_query(*m3), 3, "valid"),
        ("replay of the second", sun_query(*m2), 2, "replayed"),
        ("older counter, fresh padding", sun_query(*device.message(1)), 1, "replayed"),
        ("jump ahead", sun_query(*m10), 10, "valid"),
        ("flipped bit in e", sun_query(flip(e5, 77), c5), None, "invalid"),
        ("flipped bit in c", sun_query(e5, flip(c5, 0)), None, "invalid"),
        ("wrong UID", sun_query(*clone.message(11)), None, "invalid"),
        ("another tag's message", sun_query(*other_device.message(12)), None, "invalid"),
        ("truncated e", sun_query(e5[:-2], c5), None, "invalid"),
        ("truncated c", sun_query(e5, c5[:15]), None, "invalid"),
        ("non-hex e", sun_query("G" + e5[1:], c5), None, "invalid"),
        ("non-hex c", sun_query(e5, c5[:-1] + "Z"), None, "invalid"),
        ("over-long e", sun_query(e5 + "00", c5), None, "invalid"),
        ("missing c", f"e={e5}", None, "invalid"),
        ("missing both", "", None, "invalid"),
        ("empty values", "e=&c=", None, "invalid"),
    ]
    expected: list[tuple[str, int | None, str | None]] = []
    for what, query, counter, verdict in cases:
        before = await table_snapshot(engine, "organizations", "campaigns", "tags")
        response = await tap(client, code, query)
        expected.append(("nfc", counter, verdict))
        if verdict == "valid" or policy == "flag":
            assert response.status_code == 302, what
            assert "pcid=" in response.headers["location"], what
        else:
            assert response.status_code == 403, what
            assert "location" not in response.headers, what
            assert response.headers["content-type"].startswith("text/html"), what
            assert "tap the tag again" in response.text.lower(), what
            assert response.headers["cache-control"] == "no-store", what
        assert await taps(engine) == expected, what
        if verdict != "valid":  # a failed or replayed tap moves nothing but its scan row
            assert await table_snapshot(engine, "organizations", "campaigns", "tags") == before
    assert await last_counter(engine, tag["id"]) == 10
    # The listing shows each tap's counter, verdict and outcome: a tap answered with the
    # 403 page is "blocked", never a redirect it did not get.
    listed = await client.get(
        f"/v1/campaigns/{campaign['id']}/scans?limit=100", headers=org.headers
    )
    assert listed.status_code == 200
    items = sorted(listed.json()["items"], key=lambda item: item["id"])
    assert [(i["channel"], i["nfc_counter"], i["nfc_verification"]) for i in items] == expected
    assert [i["outcome"] for i in items] == [
        "redirect" if verdict == "valid" or policy == "flag" else "blocked"
        for _, _, verdict in expected
    ]
    csv = await client.get(f"/v1/campaigns/{campaign['id']}/scans?format=csv", headers=org.headers)
    header, *rows = csv.text.splitlines()
    assert header.split(",")[-3:] == ["outcome", "nfc_counter", "nfc_verification"]
    assert len(rows) == len(expected)


async def test_s_link_of_a_sun_tag_is_an_unverified_tap(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    flagging = await make_campaign(client, org)
    blocking = await make_campaign(client, org, slug="blocking", nfc_invalid_tap="block")
    flagged = await create_sun_tag(client, org, flagging["id"], Ntag424.random())
    blocked = await create_sun_tag(client, org, blocking["id"], Ntag424.random())
    assert (await client.get(f"/s/{flagged['code']}", headers=PHONE)).status_code == 302
    assert (await client.get(f"/s/{blocked['code']}", headers=PHONE)).status_code == 403
    assert await taps(engine) == [("nfc", None, "invalid"), ("nfc", None, "invalid")]
    # Only /n/ (the URL the tag writes) is verified: an authentic message copied onto the
    # /s/ link is an invalid tap too, and it does not use up its counter.
    device = Ntag424.random()
    sun = await create_sun_tag(client, org, blocking["id"], device, label="copied")
    message = sun_query(*device.tap())
    copied = await client.get(f"/s/{sun['code']}?{message}", headers=PHONE)
    assert copied.status_code == 403
    assert (await tap(client, sun["code"], message)).status_code == 302
    assert (await taps(engine))[2:] == [("nfc", None, "invalid"), ("nfc", 1, "valid")]


async def test_plain_nfc_and_qr_tags_are_not_verified(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org, nfc_invalid_tap="block")
    sticker = await make_tag(client, org, campaign["id"], kind="nfc")
    poster = await make_tag(client, org, campaign["id"], kind="qr")
    assert (await client.get(f"/n/{sticker['code']}", headers=PHONE)).status_code == 302
    assert (await client.get(f"/s/{sticker['code']}", headers=PHONE)).status_code == 302
    assert (await client.get(f"/s/{poster['code']}", headers=PHONE)).status_code == 302
    assert await taps(engine) == [("nfc", None, None), ("nfc", None, None), ("qr", None, None)]


async def test_derived_keys_from_the_creation_response_work_for_a_tap(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org, nfc_invalid_tap="block")
    tag = await make_tag(client, org, campaign["id"], kind="nfc_sun", nfc={"uid": "04112233445566"})
    nfc = tag["nfc"]
    assert nfc["key_derivation_version"] == 1
    device = Ntag424(
        uid=bytes.fromhex(nfc["uid"]),
        meta_read_key=bytes.fromhex(nfc["sdm_meta_read_key"]),
        file_read_key=bytes.fromhex(nfc["sdm_file_read_key"]),
    )
    first, second = device.tap(), device.tap()
    assert (await tap(client, tag["code"], sun_query(*first))).status_code == 302
    assert (await tap(client, tag["code"], sun_query(*second))).status_code == 302
    assert (await tap(client, tag["code"], sun_query(*second))).status_code == 403
    assert await taps(engine) == [("nfc", 1, "valid"), ("nfc", 2, "valid"), ("nfc", 2, "replayed")]


async def test_unknown_code_under_n_is_a_404_page(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    response = await client.get(f"/n/ZZZZZZZZ?{sun_query(AN12196_E, AN12196_C)}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert await taps(engine) == []


# --- stats ---------------------------------------------------------------------------------


async def test_stats_count_valid_taps_only(
    client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    campaign = await make_campaign(client, org)
    device = Ntag424.random()
    sun = await create_sun_tag(client, org, campaign["id"], device)
    poster = await make_tag(client, org, campaign["id"], kind="qr", label="poster")
    code = sun["code"]
    m1, m2 = device.tap(), device.tap()
    await tap(client, code, sun_query(*m1))  # valid
    await tap(client, code, sun_query(*m2))  # valid
    await tap(client, code, sun_query(*m2))  # replayed
    await tap(client, code, sun_query(*m1))  # replayed
    await tap(client, code, "e=00&c=00")  # invalid
    # A link previewer fetching a fresh message: a valid tap, counted as a bot.
    preview = {"user-agent": FACEBOOK_PREVIEW}
    await client.get(f"/n/{code}?{sun_query(*device.tap())}", headers=preview)
    await client.get(f"/s/{poster['code']}", headers=PHONE)

    response = await client.get(f"/v1/campaigns/{campaign['id']}/stats", headers=org.headers)
    assert response.status_code == 200, response.text
    data = response.json()
    assert (data["scans"], data["bot_scans"], data["replayed_taps"], data["invalid_taps"]) == (
        3,
        1,
        2,
        1,
    )
    assert data["unique_visitors"] == 1  # one phone, on both tags the same day
    by_tag = {row["tag_id"]: row for row in data["by_tag"]}
    figures = ("scans", "bot_scans", "replayed_taps", "invalid_taps", "unique_visitors")
    assert tuple(by_tag[sun["id"]][f] for f in figures) == (2, 1, 2, 1, 1)
    assert tuple(by_tag[poster["id"]][f] for f in figures) == (1, 0, 0, 0, 1)


async def test_the_tap_again_page_in_french(client: httpx.AsyncClient, org: Org) -> None:
    campaign = await make_campaign(client, org, nfc_invalid_tap="block")
    tag = await create_sun_tag(client, org, campaign["id"], Ntag424.random())
    # A forged message (a MAC of zeros): refused under "block", in the phone's language.
    response = await client.get(
        f"/n/{tag['code']}",
        params={"e": "00" * 16, "c": "00" * 8},
        headers={**PHONE, "accept-language": "fr-FR,fr;q=0.9"},
    )
    assert response.status_code == 403
    assert '<html lang="fr">' in response.text
    assert "Approchez à nouveau votre téléphone" in response.text
    assert response.headers["content-language"] == "fr"


async def test_store_report_and_heatmap_leave_out_flagged_taps(
    client: httpx.AsyncClient, org: Org
) -> None:
    """A replayed or invalid tap counts in neither stats nor attribution (issue 8): the
    scans per store and the heatmap count the valid tap only, as ``stats`` does."""
    campaign = await make_campaign(client, org)
    device = Ntag424.random()
    tag = await make_tag(
        client,
        org,
        campaign["id"],
        kind="nfc_sun",
        label="door",
        placement={"type": "Point", "coordinates": [2.35, 48.85]},
        nfc={
            "uid": device.uid.hex().upper(),
            "sdm_meta_read_key": device.meta_read_key.hex().upper(),
            "sdm_file_read_key": device.file_read_key.hex().upper(),
        },
    )
    message = sun_query(*device.tap())
    for query in (message, message, "e=00&c=00"):  # valid, replayed, invalid
        assert (await tap(client, tag["code"], query)).status_code == 302
    cid = campaign["id"]
    stats = (await client.get(f"/v1/campaigns/{cid}/stats", headers=org.headers)).json()
    assert (stats["scans"], stats["replayed_taps"], stats["invalid_taps"]) == (1, 1, 1)

    by_store = await client.get(f"/v1/campaigns/{cid}/stats/locations", headers=org.headers)
    assert by_store.status_code == 200, by_store.text
    [row] = by_store.json()["rows"]
    assert (row["scans"], row["bot_scans"], row["unique_visitors"]) == (1, 0, 1)
    heatmap = await client.get(f"/v1/campaigns/{cid}/heatmap?cell_m=500", headers=org.headers)
    assert heatmap.status_code == 200, heatmap.text
    assert [f["properties"]["scans"] for f in heatmap.json()["features"]] == [1]


async def test_a_conversion_on_an_invalid_tap_is_not_credited(
    client: httpx.AsyncClient, org: Org
) -> None:
    """An invalid tap counts in neither stats nor attribution (issue 8): a conversion
    carrying its click id stays unattributed, so the stats' ``conversions`` and revenue
    agree with the attribution report. A replayed tap's click is credited, as the
    attribution report credits it (docs/DECISIONS.md)."""
    campaign = await make_campaign(client, org)
    device = Ntag424.random()
    tag = await create_sun_tag(client, org, campaign["id"], device)
    message = sun_query(*device.tap())
    clicks = []
    for query in (message, message, "e=00&c=00"):  # valid, replayed, invalid
        response = await tap(client, tag["code"], query)
        clicks.append(parse_qs(urlsplit(response.headers["location"]).query)["pcid"][0])
    attributed = []
    for n, click in enumerate(clicks):
        response = await client.post(
            "/v1/conversions",
            json={
                "click_id": click,
                "event": "purchase",
                "external_id": f"order-{n}",
                "value": {"amount_minor": 100, "currency": "EUR"},
            },
            headers=org.headers,
        )
        assert response.status_code == 201, response.text
        attributed.append((response.json()["attributed"], response.json()["campaign_id"]))
    assert attributed == [(True, campaign["id"]), (True, campaign["id"]), (False, None)]

    cid = campaign["id"]
    stats = (await client.get(f"/v1/campaigns/{cid}/stats", headers=org.headers)).json()
    assert (stats["conversions"], stats["revenue"]) == (
        2,
        [{"currency": "EUR", "amount_minor": 200}],
    )
    report = (await client.get(f"/v1/campaigns/{cid}/attribution", headers=org.headers)).json()
    assert report["totals"]["conversions"] == stats["conversions"]
    assert report["unattributed"]["conversions"] == 1
