"""Re-sealing stored secrets under the current secret key (``passerelle secrets
reencrypt``), after ``PASSERELLE_SECRET_KEY`` was rotated (the old key moved to
``PASSERELLE_SECRET_KEY_PREVIOUS``, :class:`campaigns.crypto.Keyring`).

Every column holding values sealed by :func:`campaigns.crypto.seal` is a
:class:`SealedColumn` in :data:`SEALED_COLUMNS`; a new one (webhook signing secrets, a
dashboard's) joins with one :func:`register_sealed_column` call. Each value is opened
under whichever key opens it; one sealed under a previous key is re-sealed under the
current key (same purpose, same ``aad``) and written back, row by row in batches of
short transactions, each row locked and re-checked (``FOR UPDATE``) so a concurrent
write is never overwritten. Idempotent: a second run finds every value current.

Signatures (:func:`campaigns.crypto.sign`) are not stored by Passerelle itself, so they
need no re-encryption: they verify under previous keys until those are removed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from campaigns.crypto import Keyring, SealedValueError, seal, unseal_with_age
from campaigns.payloads import keys as sun_keys
from campaigns.webhooks import signing as webhook_signing


@dataclass(frozen=True, slots=True)
class SealedColumn:
    """One column of sealed values. ``table``/``column``/``key`` name it (``key``: the
    primary key column); ``extra`` are the other columns ``aad`` needs, and
    ``aad(row)`` makes the associated data from a row mapping holding ``key`` and
    ``extra``; ``purpose`` is the :func:`campaigns.crypto.seal` purpose."""

    table: str
    column: str
    key: str
    purpose: str
    aad: Callable[[dict[str, Any]], bytes]
    extra: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``table.column``, as reported."""
        return f"{self.table}.{self.column}"


SEALED_COLUMNS: dict[str, SealedColumn] = {}


def register_sealed_column(column: SealedColumn) -> SealedColumn:
    """Add ``column`` to :data:`SEALED_COLUMNS` and return it."""
    SEALED_COLUMNS[column.name] = column
    return column


register_sealed_column(
    SealedColumn(
        table="organizations",
        column="nfc_master_secret_encrypted",
        key="id",
        purpose=sun_keys.MASTER_SECRET_PURPOSE,
        aad=lambda row: f"org:{row['id']}".encode(),
    )
)
register_sealed_column(
    SealedColumn(
        table="tags",
        column="nfc_keys_encrypted",
        key="id",
        purpose=sun_keys.SUN_KEYS_PURPOSE,
        aad=lambda row: sun_keys.tag_aad(row["organization_id"], bytes(row["nfc_uid"])),
        extra=("organization_id", "nfc_uid"),
    )
)
register_sealed_column(
    SealedColumn(
        table="webhooks",
        column="secret_encrypted",
        key="id",
        purpose=webhook_signing.SECRET_PURPOSE,
        aad=lambda row: webhook_signing.secret_aad(row["organization_id"], row["id"]),
        extra=("organization_id",),
    )
)


@dataclass
class ReencryptReport:
    """Per ``table.column``: ``checked`` values, ``resealed`` (were under a previous
    key), ``unreadable`` (open under no key: left as they are)."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, int]]:
        """``{"table.column": {"checked": n, "resealed": n, "unreadable": n}}``."""
        return {
            name: {k: c[k] for k in ("checked", "resealed", "unreadable")}
            for name, c in sorted(self.counts.items())
        }


async def count_sealed(engine: AsyncEngine) -> dict[str, int]:
    """Values stored per registered column (for a progress bar's length)."""
    totals = {}
    async with engine.connect() as conn:
        for col in SEALED_COLUMNS.values():
            totals[col.name] = int(
                await conn.scalar(
                    text(f"SELECT count(*) FROM {col.table} WHERE {col.column} IS NOT NULL")  # noqa: S608
                )
                or 0
            )
    return totals


async def reencrypt(
    engine: AsyncEngine,
    keys: Keyring,
    *,
    batch_size: int = 500,
    progress: Callable[[str, int], None] | None = None,
) -> ReencryptReport:
    """Re-seal under ``keys.current`` every registered value sealed under a previous key
    (module docstring). ``progress(name, rows)`` after each batch. Returns the report."""
    report = ReencryptReport()
    for col in SEALED_COLUMNS.values():
        counts = report.counts.setdefault(col.name, Counter())
        columns = ", ".join(dict.fromkeys((col.key, *col.extra, col.column)))
        after: Any = None
        while True:
            async with engine.begin() as conn:
                where = f"{col.column} IS NOT NULL" + (
                    f" AND {col.key} > :after" if after is not None else ""
                )
                rows = (
                    await conn.execute(
                        text(
                            f"SELECT {columns} FROM {col.table} WHERE {where}"  # noqa: S608
                            f" ORDER BY {col.key} LIMIT :limit FOR UPDATE"
                        ),
                        {"after": after, "limit": batch_size},
                    )
                ).all()
                for row in rows:
                    mapping = dict(row._mapping)
                    counts["checked"] += 1
                    aad = col.aad(mapping)
                    try:
                        plain, current = unseal_with_age(
                            keys, col.purpose, bytes(mapping[col.column]), aad=aad
                        )
                    except SealedValueError:
                        counts["unreadable"] += 1
                        continue
                    if current:
                        continue
                    await conn.execute(
                        text(
                            f"UPDATE {col.table} SET {col.column} = :sealed"  # noqa: S608
                            f" WHERE {col.key} = :key"
                        ),
                        {
                            "sealed": seal(keys, col.purpose, plain, aad=aad),
                            "key": mapping[col.key],
                        },
                    )
                    counts["resealed"] += 1
            if rows and progress is not None:
                progress(col.name, len(rows))
            if len(rows) < batch_size:
                break
            after = rows[-1]._mapping[col.key]
    return report
