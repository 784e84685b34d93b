"""passerelle_judge_taps(): the group commit judges its NFC taps at the end, in the
round trip of its COMMIT

The group commit judged its taps first (``BEGIN; SELECT passerelle_accept_counters``)
and then held the tags' row locks across its ``COPY`` (two round trips to the client)
until the commit: every concurrent group commit with a tap of one of those tags waited
for all of it, network and event loops included. Now the ``COPY`` stores the taps as
``valid`` and this function, sent with the feed row and the ``COMMIT``, judges them
(``passerelle_accept_counters``, unchanged: the same locks, order and snapshots) and
marks the replayed ones (and, for a tap whose campaign blocks replays, its outcome
``blocked``: it gets the 403 page, not the redirect): the locks are held from there to
the commit only. Nobody sees the provisional verdict: the rows are not committed yet.

Revision ID: 6a1d9e3c7b25
Revises: 8e4b1c6f2a07
Create Date: 2026-12-07 00:10:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "6a1d9e3c7b25"
down_revision: str | None = "8e4b1c6f2a07"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JUDGE_TAPS_FUNCTION = """
CREATE FUNCTION passerelle_judge_taps(
    click_ids text[], tag_ids bigint[], counters integer[], blocks boolean[]
) RETURNS boolean[] LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    answers boolean[];
BEGIN
    -- Offers are (tag_ids[i], counters[i]) of the tap stored as click_ids[i], judged in
    -- that order; the taps' scans were stored 'valid' in this transaction. blocks[i]:
    -- the tap's campaign blocks replays (nfc_invalid_tap = 'block').
    answers := passerelle_accept_counters(tag_ids, counters);
    IF false = ANY(answers) THEN
        UPDATE scans AS s
        SET nfc_verification = 'replayed',
            outcome = CASE WHEN o.blocks THEN 'blocked' ELSE s.outcome END
        FROM unnest(click_ids, answers, blocks) AS o(click_id, accepted, blocks)
        WHERE s.click_id = o.click_id AND NOT o.accepted;
    END IF;
    RETURN answers;
END
$$
"""


def upgrade() -> None:
    op.execute(JUDGE_TAPS_FUNCTION)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS passerelle_judge_taps(text[], bigint[], integer[], boolean[])"
    )
