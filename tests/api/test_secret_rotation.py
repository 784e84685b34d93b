"""Rotating ``PASSERELLE_SECRET_KEY``: previous keys still open what they sealed, new
seals use the current key, ``secrets reencrypt`` moves everything to the current one."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from api.app import create_app, served_app
from campaigns import crypto
from campaigns.crypto import Keyring, SealedValueError
from campaigns.payloads import keys as sun_keys
from campaigns.services import secrets as sealed
from campaigns.settings import Settings
from tests.conftest import Org, make_campaign, make_tag
from tests.fixtures.ntag424 import Ntag424
from tests.fixtures.user_agents import IPHONE_SAFARI


@asynccontextmanager
async def served(settings: Settings, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a second app (its own process state) with ``changes`` to ``settings``."""
    application = create_app(settings.model_copy(update=changes))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=served_app(application), client=("203.0.113.9", 1))
        async with httpx.AsyncClient(transport=transport, base_url="https://go.example.com") as c:
            yield c


async def tap(client: httpx.AsyncClient, tag: dict[str, Any], device: Ntag424) -> int:
    e, c = device.tap()
    response = await client.get(
        f"/n/{tag['code']}?e={e}&c={c}", headers={"User-Agent": IPHONE_SAFARI}
    )
    return response.status_code


async def verdicts(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT nfc_verification FROM scans ORDER BY id"))
        return [row[0] for row in rows]


async def sealed_values(engine: AsyncEngine) -> list[tuple[str, bytes | None, bytes]]:
    """``(kind, tag UID or None, sealed value)`` of every sealed value, the master
    secret first, then tags by id."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT 'org', NULL, nfc_master_secret_encrypted, 0 FROM organizations"
                " WHERE nfc_master_secret_encrypted IS NOT NULL UNION ALL"
                " SELECT 'tag', nfc_uid, nfc_keys_encrypted, id FROM tags"
                " WHERE nfc_keys_encrypted IS NOT NULL ORDER BY 1, 4"
            )
        )
        return [(r[0], None if r[1] is None else bytes(r[1]), bytes(r[2])) for r in rows]


def opens(key: crypto.SecretKeys, org_id: int, uid: bytes | None, value: bytes) -> bool:
    try:
        if uid is None:
            sun_keys.unseal_master_secret(key, organization_id=org_id, sealed=value)
        else:
            sun_keys.unseal_sun_keys(key, organization_id=org_id, uid=uid, sealed=value)
    except SealedValueError:
        return False
    return True


def test_keyring_opens_with_previous_keys_and_seals_with_the_current() -> None:
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    value = crypto.seal(old, "p", b"secret", aad=b"row:1")
    rotated = Keyring(new, (old,))
    assert crypto.unseal_with_age(rotated, "p", value, aad=b"row:1") == (b"secret", False)
    resealed = crypto.seal(rotated, "p", b"secret", aad=b"row:1")
    assert crypto.unseal_with_age(rotated, "p", resealed, aad=b"row:1") == (b"secret", True)
    assert crypto.unseal(new, "p", resealed, aad=b"row:1") == b"secret"
    with pytest.raises(SealedValueError):
        crypto.unseal(new, "p", value, aad=b"row:1")
    with pytest.raises(SealedValueError):
        crypto.unseal(rotated, "p", value, aad=b"row:2")
    signature = crypto.sign(old, "visitor", b"m")
    assert crypto.verify(rotated, "visitor", b"m", signature)
    assert not crypto.verify(new, "visitor", b"m", signature)
    assert crypto.sign(rotated, "visitor", b"m") == crypto.sign(new, "visitor", b"m")
    assert old not in repr(rotated) and new not in repr(rotated)


def test_settings_keyring() -> None:
    settings = Settings(secret_key="k" * 32, secret_key_previous=" a , b,,")
    assert settings.keyring == Keyring("k" * 32, ("a", "b"))
    assert "a" not in repr(settings.keyring)


async def test_rotation_keeps_nfc_taps_verifying(
    settings: Settings, client: httpx.AsyncClient, org: Org, engine: AsyncEngine
) -> None:
    old = settings.secret_key
    new = secrets.token_urlsafe(32)
    campaign = await make_campaign(client, org, nfc_invalid_tap="block")
    # Sealed under the old key: supplied keys, and derived keys (the organization's
    # master secret).
    supplied = Ntag424.random()
    given = await make_tag(
        client,
        org,
        campaign["id"],
        kind="nfc_sun",
        label="given",
        nfc={
            "uid": supplied.uid.hex().upper(),
            "sdm_meta_read_key": supplied.meta_read_key.hex().upper(),
            "sdm_file_read_key": supplied.file_read_key.hex().upper(),
        },
    )
    derived_tag = await make_tag(
        client, org, campaign["id"], kind="nfc_sun", label="derived", nfc={"uid": "04112233445566"}
    )
    derived = Ntag424.from_created(derived_tag)
    assert await tap(client, given, supplied) == 302
    before = await sealed_values(engine)
    assert len(before) == 3
    assert all(opens(old, org.id, uid, value) for _, uid, value in before)

    # Rotated: new current key, the old one previous. Taps verify; a new derived tag
    # opens the master secret sealed under the old key; its keys are sealed under the new.
    async with served(settings, secret_key=new, secret_key_previous=old) as rotated:
        assert await tap(rotated, given, supplied) == 302
        assert await tap(rotated, derived_tag, derived) == 302
        response = await rotated.post(
            f"/v1/campaigns/{campaign['id']}/tags",
            json={"kind": "nfc_sun", "label": "late", "nfc": {"uid": "04112233445577"}},
            headers=org.headers,
        )
        assert response.status_code == 201, response.text
        late_tag = response.json()
        late = Ntag424.from_created(late_tag)
        master = sun_keys.unseal_master_secret(
            Keyring(new, (old,)), organization_id=org.id, sealed=before[0][2]
        )
        assert sun_keys.derive_sun_keys(master, late.uid, version=1).meta_read == late.meta_read_key

        report = await sealed.reencrypt(engine, Keyring(new, (old,)), batch_size=1)
        assert report.as_dict() == {
            "organizations.nfc_master_secret_encrypted": {
                "checked": 1,
                "resealed": 1,
                "unreadable": 0,
            },
            "tags.nfc_keys_encrypted": {"checked": 3, "resealed": 2, "unreadable": 0},
            "webhooks.secret_encrypted": {"checked": 0, "resealed": 0, "unreadable": 0},
        }
        # Idempotent.
        again = await sealed.reencrypt(engine, Keyring(new, (old,)))
        assert [c["resealed"] for c in again.as_dict().values()] == [0, 0, 0]
        assert await tap(rotated, given, supplied) == 302

    # Every value now opens under the new key alone, none under the old one.
    after = await sealed_values(engine)
    assert len(after) == 4
    assert all(opens(new, org.id, uid, value) for _, uid, value in after)
    assert not any(opens(old, org.id, uid, value) for _, uid, value in after)

    # The previous key removed: taps still verify, through a fresh process.
    async with served(settings, secret_key=new, secret_key_previous="") as current:
        assert await tap(current, given, supplied) == 302
        assert await tap(current, derived_tag, derived) == 302
        assert await tap(current, late_tag, late) == 302
    assert await verdicts(engine) == ["valid"] * 7
