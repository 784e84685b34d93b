"""Linking conversions to their click's scan: the one place it is done.

A conversion carries the click id (``pcid``) of the scan that led to it; that scan, its
tag and its campaign get the credit. Two moments can link them, and both call
:func:`credit_conversions`: when the conversion is stored
(``campaigns.services.conversions.record_conversion``), and when a scan that waited in
the spool during an outage is replayed (``campaigns.scanning.writer``), since the
merchant may report the order before the scan reaches the database.

Crediting also stores the credited conversions' attribution credits at the default
parameters (:mod:`campaigns.services.credits`), in the same transaction.

Only a scan of the conversion's own organization is credited: another tenant's click id
is treated as unknown, so no tenant can learn or credit another's click ids.

An internal scan (``scans.internal``: a phone signed into the dashboard, staff testing a
poster) is never credited either: a conversion after a staff member's test scan is not
the campaign's, and stays unattributed (``campaign_id`` null) in every report. Nor is an
NFC tap that failed verification (``scans.nfc_verification`` ``invalid``: a forged or
malformed SUN message, issue 8), which the attribution report already leaves unattributed:
its conversion counts in no campaign's stats either. A ``replayed`` tap is credited, as the
attribution report credits it (docs/DECISIONS.md, "Attribution").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

# The credited conversions also make one live-feed batch (campaigns.feed.store), in the
# same statement: a conversion enters its campaign's feed when it gets its campaign.
_CREDIT_SQL = """
WITH credited AS (
    UPDATE conversions AS c SET scan_id = s.id, campaign_id = s.campaign_id, tag_id = s.tag_id
    FROM scans AS s WHERE s.click_id = ANY(%s) AND c.click_id = s.click_id
    AND c.organization_id = s.organization_id AND c.scan_id IS NULL AND NOT s.internal
    AND s.nfc_verification IS DISTINCT FROM 'invalid'
    RETURNING c.id, c.campaign_id
),
feed AS (
    INSERT INTO feed_batches (kind, campaign_ids, conversion_ids)
    SELECT 'conversion', array_agg(DISTINCT campaign_id), array_agg(id ORDER BY id)
    FROM credited HAVING count(*) > 0
)
SELECT id FROM credited
"""


async def credit_conversions(
    conn: psycopg.AsyncConnection[Any],
    click_ids: Sequence[str],
    *,
    recompute: Sequence[int] = (),
) -> int:
    """Credit every not yet attributed conversion carrying one of ``click_ids`` to the
    scan of that click id in the same organization, unless that scan is internal or an
    ``invalid`` NFC tap (setting its ``scan_id``, ``campaign_id`` and ``tag_id``), record
    them as one live-feed batch, and store their attribution credits with those of the
    conversions ``recompute`` (:func:`campaigns.services.credits.store_credits`). Runs in
    ``conn``'s current transaction, if any.

    Returns the number of conversions credited. Raises ``psycopg.Error``.
    """
    from campaigns.services.credits import store_credits  # it imports the reports' SQL

    cur = await conn.execute(_CREDIT_SQL, (list(click_ids),))
    credited = [int(row[0]) for row in await cur.fetchall()]
    await store_credits(conn, [*credited, *recompute])
    return len(credited)
