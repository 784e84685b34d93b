"""PostgreSQL's own cost per scan row, and per NFC counter update, in a scratch database.

Prints the backend's CPU (from ``/proc``: the server must run on this machine) and the
wall time per row of:

- ``COPY`` of ``--rows`` scan rows as the writer sends them (batches of ``--batch``
  rows, as group commits), with the schema as migrated, then without the secondary
  indexes of ``scans`` (``campaign_id, scanned_at``; the partial ones on ``visitor_id``
  and ``cookie_id``), then also without its CHECK constraint: each variant in a
  transaction rolled back, so nothing is dropped for good;
- the NFC counter check of :func:`campaigns.scanning.nfc.accept_counters`
  (``--rows`` taps on as many tags, in batches: one ``passerelle_accept_counters`` call,
  which locks the tags rows, reads and upserts ``nfc_counters``), the three statements
  it replaced, and for comparison the counter as a column of ``tags`` updated
  in one statement per batch (the ``tags`` trigger runs);
- the ``COPY`` again with a statement-level rollup trigger (transition table, one grouped
  upsert into ``scan_rollups`` per batch), the rejected option (b) of the report rollups.

    python benchmarks/scan_rows_pg.py [--rows 10000] [--batch 100] [--repeat 3]

Best of ``--repeat`` runs (a shared machine only ever adds time).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scan_redirect import SERVER_URL, seed  # noqa: E402
from campaigns import migrate  # noqa: E402
from campaigns.db import libpq_url  # noqa: E402
from campaigns.scanning.links import new_click_id  # noqa: E402
from campaigns.scanning.nfc import ACCEPT_COUNTERS_SQL  # noqa: E402
from campaigns.scanning.record import COPY_SQL, ScanRecord, row  # noqa: E402

#: The three statements that judged a batch of taps before ``passerelle_accept_counters``
#: (migration ``accept_nfc_counters``), for comparison.
LOCK_TAGS_SQL = "SELECT id FROM tags WHERE id = ANY(%(tag_ids)s) ORDER BY id FOR NO KEY UPDATE"
READ_COUNTERS_SQL = "SELECT tag_id, last_counter FROM nfc_counters WHERE tag_id = ANY(%(tag_ids)s)"
STORE_COUNTERS_SQL = (
    "INSERT INTO nfc_counters (tag_id, last_counter) "
    "SELECT * FROM unnest(%(tag_ids)s::bigint[], %(counters)s::integer[]) "
    "ON CONFLICT (tag_id) DO UPDATE SET last_counter = excluded.last_counter"
)
#: The counters' update of one batch as it was on ``tags`` (before migration
#: ``nfc_counters``).
TAGS_UPDATE_SQL = (
    "UPDATE tags SET nfc_last_counter = offer.counter "
    "FROM unnest(%(tag_ids)s::bigint[], %(counters)s::integer[]) AS offer(id, counter) "
    "WHERE tags.id = offer.id"
)
ROLLUP_TRIGGER = [
    """CREATE FUNCTION bench_fold_scans() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO scan_rollups (campaign_id, tag_id, hour, scans, bot_scans, burst_scans)
        SELECT campaign_id, tag_id, date_trunc('hour', scanned_at, 'UTC'),
               count(*) FILTER (WHERE NOT is_bot), count(*) FILTER (WHERE is_bot),
               count(*) FILTER (WHERE burst)
        FROM new_scans GROUP BY 1, 2, 3
        ON CONFLICT (campaign_id, hour, tag_id) DO UPDATE
        SET scans = scan_rollups.scans + EXCLUDED.scans,
            bot_scans = scan_rollups.bot_scans + EXCLUDED.bot_scans,
            burst_scans = scan_rollups.burst_scans + EXCLUDED.burst_scans;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER bench_fold_scans AFTER INSERT ON scans REFERENCING NEW TABLE AS new_scans "
    "FOR EACH STATEMENT EXECUTE FUNCTION bench_fold_scans()",
]
SECONDARY_INDEXES = (
    "ix_scans_campaign_id_scanned_at",
    "ix_scans_visitor_id_scanned_at",
    "ix_scans_cookie_id_scanned_at",
)


def backend_cpu_s(conn: psycopg.Connection[Any]) -> float:
    """CPU seconds (user + system) used so far by ``conn``'s backend."""
    pid = conn.info.backend_pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def records(n: int, tag_ids: list[int], org_id: int, campaign_id: int) -> list[tuple[Any, ...]]:
    """``n`` scan rows like a campaign's: a visitor id each, no cookie id, a phone's agent."""
    now = dt.datetime.now(dt.UTC)
    return [
        row(
            ScanRecord(
                click_id=new_click_id(),
                organization_id=org_id,
                campaign_id=campaign_id,
                tag_id=tag_ids[i % len(tag_ids)],
                scanned_at=now + dt.timedelta(milliseconds=i),
                channel="qr",
                method="GET",
                outcome="redirect",
                destination=f"https://shop.example.com/landing?utm_source=qr&pcid={i}",
                user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile",
                device_type="mobile",
                os="iOS",
                browser="Mobile Safari",
                is_bot=False,
                ip_truncated=f"203.0.{i % 256}.0",
                visitor_id=os.urandom(16),
            )
        )
        for i in range(n)
    ]


def measure(
    conn: psycopg.Connection[Any], setup: list[str], work: Callable[[], None], repeat: int
) -> tuple[float, float]:
    """Best (CPU s, wall s) of ``repeat`` runs of ``work`` after ``setup``, each in a
    transaction rolled back."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        with conn.transaction(force_rollback=True):
            for statement in setup:
                conn.execute(statement)
            cpu0, wall0 = backend_cpu_s(conn), time.perf_counter()
            work()
            cpu, wall = backend_cpu_s(conn) - cpu0, time.perf_counter() - wall0
        best = (min(best[0], cpu), min(best[1], wall))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100, help="rows per group commit")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    name = f"passerelle_rows_{secrets.token_hex(4)}"
    url = make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)
    migrate.ensure_database(url)
    try:
        migrate.upgrade(url)
        conninfo = libpq_url(url)
        seed(conninfo, args.rows)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            org_id, campaign_id = conn.execute(
                "SELECT organization_id, id FROM campaigns"
            ).fetchone() or (0, 0)
            tag_ids = [r[0] for r in conn.execute("SELECT id FROM tags ORDER BY id")]
            rows = records(args.rows, tag_ids, org_id, campaign_id)
            batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]

            def copy() -> None:
                for batch in batches:
                    with conn.cursor() as cur, cur.copy(COPY_SQL) as out:
                        for values in batch:
                            out.write_row(values)

            def report(label: str, cpu_wall: tuple[float, float]) -> None:
                cpu, wall = cpu_wall
                print(
                    f"{label:<44} CPU {cpu / args.rows * 1e6:6.1f} µs/row   "
                    f"wall {wall / args.rows * 1e6:6.1f} µs/row"
                )

            print(f"# {args.rows} rows in batches of {args.batch}, best of {args.repeat}")
            drop = [f"DROP INDEX {index}" for index in SECONDARY_INDEXES]
            report("COPY scans, as migrated", measure(conn, [], copy, args.repeat))
            report("COPY scans, no secondary indexes", measure(conn, drop, copy, args.repeat))
            no_check = [*drop, "ALTER TABLE scans DROP CONSTRAINT ck_scans_bot_reason"]
            report("COPY scans, no secondary index nor CHECK", measure(conn, no_check, copy, 3))

            # Option (b) of the report rollups (docs/DECISIONS.md): a statement-level
            # trigger folding each COPY's transition table into the hourly rollup with
            # one grouped upsert (counts only: the least such a trigger would do).
            report(
                "COPY scans + statement rollup trigger",
                measure(conn, ROLLUP_TRIGGER, copy, args.repeat),
            )

            counter_batches = [
                tag_ids[i : i + args.batch] for i in range(0, len(tag_ids), args.batch)
            ]

            def accept_counters() -> None:
                # What campaigns.scanning.nfc.accept_counters sends for a batch of taps
                for n, ids in enumerate(counter_batches):
                    conn.execute(ACCEPT_COUNTERS_SQL, (ids, [n + 1] * len(ids))).fetchall()

            def three_statements() -> None:
                # What it sent before: lock, read, upsert
                for n, ids in enumerate(counter_batches):
                    params = {"tag_ids": ids, "counters": [n + 1] * len(ids)}
                    conn.execute(LOCK_TAGS_SQL, params).fetchall()
                    conn.execute(READ_COUNTERS_SQL, params).fetchall()
                    conn.execute(STORE_COUNTERS_SQL, params)

            def tags_update() -> None:
                for n, ids in enumerate(counter_batches):
                    conn.execute(TAGS_UPDATE_SQL, {"tag_ids": ids, "counters": [n + 1] * len(ids)})

            report(
                "NFC counters, passerelle_accept_counters", measure(conn, [], accept_counters, 3)
            )
            report("NFC counters, three statements", measure(conn, [], three_statements, 3))
            # The counter back on tags for comparison; today's tags trigger notifies every
            # updated row (the one before migration nfc_counters compared rows as JSON
            # first: 26 µs per row with it, 14 without, 4-5 on the counters table).
            column = ["ALTER TABLE tags ADD COLUMN nfc_last_counter integer"]
            report("NFC counters as a tags column (trigger)", measure(conn, column, tags_update, 3))
    finally:
        migrate.drop_database(url)


if __name__ == "__main__":
    main()
