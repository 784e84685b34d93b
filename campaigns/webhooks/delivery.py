"""The webhook dispatcher: sends due outbox rows, with retries, from every server process.

Each server process runs one :class:`WebhookDispatcher` (started by the app's lifespan).
A pass claims up to ``concurrency`` due rows (``status = 'pending' AND next_attempt_at <=
now()``) in one statement with ``FOR UPDATE SKIP LOCKED``, moving their
``next_attempt_at`` a lease ahead and stamping a random ``lease_token``: processes never
claim the same row twice at once, and a row whose process died mid-attempt is due again
when its lease ends (at least once). Then, outside any transaction, each row is POSTed,
and its outcome written back only if the row still carries this claim's token:

- 2xx: ``succeeded``;
- anything else (other status, connection error, timeout, refused address): after
  ``max_attempts`` attempts ``failed``, else ``pending`` again after
  ``min(cap, base * 2^(n-1)) * uniform(0.5, 1)`` seconds (exponential backoff with
  jitter, so many failing deliveries do not retry in lockstep).

Every attempt resolves the host again and checks every address
(:mod:`campaigns.webhooks.addresses`), then connects to the checked address itself (the
URL's host stays in ``Host`` and TLS SNI, and the certificate is verified against it), so
a DNS answer that changed since creation (rebinding) cannot reach a private address.
Redirects are not followed (a 3xx is a failure); the response body is not read.

Nothing here is on a scan's path: the scan writer only inserts rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import random
import time
import uuid
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import psycopg
from psycopg.rows import TupleRow

from campaigns.crypto import SealedValueError, SecretKeys, unseal
from campaigns.webhooks.addresses import AddressRefused, IPAddress, checked_addresses
from campaigns.webhooks.outbox import body_bytes
from campaigns.webhooks.signing import (
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SECRET_PURPOSE,
    SIGNATURE_HEADER,
    secret_aad,
    signature_header,
)

log = logging.getLogger(__name__)

USER_AGENT: Final = "Passerelle-Webhooks/1"

CLAIM_SQL: Final = (
    "UPDATE webhook_deliveries AS d "
    "SET next_attempt_at = now() + make_interval(secs => %(lease_s)s), "
    "lease_token = %(token)s, attempts = d.attempts + 1, last_attempt_at = now() "
    "FROM webhooks AS w "
    "WHERE w.id = d.webhook_id AND d.id IN ("
    "SELECT id FROM webhook_deliveries "
    "WHERE status = 'pending' AND next_attempt_at <= now() "
    "ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
    "RETURNING d.id, d.webhook_id, w.organization_id, w.url, w.secret_encrypted, "
    "d.event_id, d.event_type, d.payload, d.attempts"
)

#: Writes an attempt's outcome, keeping the last ten in ``attempt_log``.
FINISH_SQL: Final = (
    "UPDATE webhook_deliveries SET status = %(status)s, "
    "next_attempt_at = now() + make_interval(secs => %(delay_s)s), "
    "lease_token = NULL, response_code = %(response_code)s, error = %(error)s, "
    "attempt_log = (CASE WHEN jsonb_array_length(attempt_log) >= 10 "
    "THEN attempt_log - 0 ELSE attempt_log END) || jsonb_build_array(jsonb_build_object("
    "'at', %(at)s::text, 'response_code', %(response_code)s::integer, "
    "'error', %(error)s::text, 'duration_ms', %(duration_ms)s::integer)) "
    "WHERE id = %(id)s AND lease_token = %(token)s"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery claimed for one attempt (``attempt``: 1 for the first)."""

    id: int
    webhook_id: int
    organization_id: int
    url: str
    secret_encrypted: bytes
    event_id: str
    event_type: str
    payload: dict[str, Any]
    attempt: int


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """How an attempt went: the HTTP status (None when no response), a short error."""

    response_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.response_code is not None and 200 <= self.response_code < 300


def backoff_s(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based):
    ``min(cap_s, base_s * 2^(attempt-1))`` times a uniform factor in [0.5, 1]
    ("equal jitter", AWS Architecture Blog, "Exponential Backoff And Jitter", 2015)."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 62))
    return ceiling * rng.uniform(0.5, 1.0)


class WebhookDispatcher:
    """Sends due webhook deliveries in the background (see the module docstring).

    ``conninfo`` is a libpq URL; ``secret_key`` opens the sealed signing secrets;
    ``allow_private`` lifts the address checks (development and test only). Times are
    seconds. ``transport`` replaces httpx's network transport (tests). Call
    :meth:`start` inside the event loop and :meth:`stop` at shutdown, or :meth:`run_once`
    to run one pass by hand."""

    def __init__(
        self,
        *,
        conninfo: str,
        secret_key: SecretKeys,
        allow_private: bool,
        max_attempts: int = 12,
        backoff_base_s: float = 30.0,
        backoff_cap_s: float = 21_600.0,
        timeout_s: float = 10.0,
        lease_s: float = 60.0,
        poll_interval_s: float = 1.0,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._secret_key = secret_key
        self._allow_private = allow_private
        self._max_attempts = max_attempts
        self._backoff_base_s = backoff_base_s
        self._backoff_cap_s = backoff_cap_s
        self._timeout_s = timeout_s
        self._lease_s = lease_s
        self._poll_interval_s = poll_interval_s
        self._concurrency = concurrency
        self._transport = transport
        self._rng = random.Random()  # noqa: S311 - jitter, not a secret
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failing = False
        #: Attempts made by this dispatcher (metrics, tests).
        self.attempts = 0

    @property
    def running(self) -> bool:
        """True while the background task runs."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the background task (no-op when running)."""
        if not self.running:
            self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Cancel the task (an attempt in flight is abandoned: its row is due again when
        its lease ends) and close the connection and the HTTP client."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_conn()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        """Look for due rows now rather than at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.run_once()
            except (psycopg.Error, OSError) as exc:
                if not self._failing:
                    log.warning("webhook dispatcher lost the database, will retry: %r", exc)
                    self._failing = True
                await self._close_conn()
                sent = 0
            except Exception:
                log.exception("webhook dispatcher failed unexpectedly; continuing")
                await self._close_conn()
                sent = 0
            else:
                if self._failing:
                    log.warning("webhook dispatcher reaches the database again")
                    self._failing = False
            if sent >= self._concurrency:
                continue  # more may be due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
            self._wake.clear()

    async def run_once(self) -> int:
        """Claim up to ``concurrency`` due deliveries, attempt them concurrently, record
        the outcomes. Returns how many were attempted. Raises ``psycopg.Error``."""
        conn = await self._connection()
        token = uuid.uuid4()
        cur = await conn.execute(
            CLAIM_SQL, {"lease_s": self._lease_s, "token": token, "limit": self._concurrency}
        )
        claimed = [Claimed(*row) for row in await cur.fetchall()]
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self._attempt(item) for item in claimed))
        for item, (outcome, at, duration_ms) in zip(claimed, outcomes, strict=True):
            await self._finish(conn, item, token, outcome, at, duration_ms)
        return len(claimed)

    async def _finish(
        self,
        conn: psycopg.AsyncConnection[TupleRow],
        item: Claimed,
        token: uuid.UUID,
        outcome: Outcome,
        at: dt.datetime,
        duration_ms: int,
    ) -> None:
        if outcome.ok:
            status, delay_s = "succeeded", 0.0
        elif item.attempt >= self._max_attempts:
            status, delay_s = "failed", 0.0
        else:
            status = "pending"
            delay_s = backoff_s(
                item.attempt,
                base_s=self._backoff_base_s,
                cap_s=self._backoff_cap_s,
                rng=self._rng,
            )
        await conn.execute(
            FINISH_SQL,
            {
                "status": status,
                "delay_s": delay_s,
                "response_code": outcome.response_code,
                "error": outcome.error,
                "at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "duration_ms": duration_ms,
                "id": item.id,
                "token": token,
            },
        )

    async def _attempt(self, item: Claimed) -> tuple[Outcome, dt.datetime, int]:
        at = dt.datetime.now(dt.UTC)
        started = time.perf_counter()
        try:
            outcome = await self._send(item)
        except Exception:  # a bug must not lose the claim's outcome
            log.exception("webhook delivery %d failed unexpectedly", item.id)
            outcome = Outcome(None, "internal_error")
        self.attempts += 1
        return outcome, at, round((time.perf_counter() - started) * 1000)

    async def _send(self, item: Claimed) -> Outcome:
        try:
            secret = unseal(
                self._secret_key,
                SECRET_PURPOSE,
                item.secret_encrypted,
                aad=secret_aad(item.organization_id, item.webhook_id),
            ).decode()
        except SealedValueError:
            return Outcome(None, "secret_unreadable")
        try:
            addresses = await checked_addresses(item.url, allow_private=self._allow_private)
        except AddressRefused as exc:
            return Outcome(None, exc.code)
        body = body_bytes(item.payload)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            EVENT_ID_HEADER: item.event_id,
            EVENT_TYPE_HEADER: item.event_type,
            DELIVERY_ID_HEADER: str(item.id),
            SIGNATURE_HEADER: signature_header(secret, int(time.time()), body),
        }
        error = "connect_failed"
        for address in addresses:  # the checked addresses only, in the resolver's order
            try:
                response = await self._post(item.url, address, headers, body)
            except httpx.TimeoutException:
                return Outcome(None, "timeout")
            except httpx.ConnectError:
                continue  # next address, as a browser would
            except httpx.HTTPError as exc:
                return Outcome(None, f"http_error: {type(exc).__name__}")
            return Outcome(response, None if 200 <= response < 300 else f"http_{response}")
        return Outcome(None, error)

    async def _post(
        self, url: str, address: IPAddress, headers: dict[str, str], body: bytes
    ) -> int:
        """POST to ``url`` through ``address``: the URL's host goes in ``Host`` and SNI
        (certificates are checked against it). Returns the status; the body is not read."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        pinned = parts._replace(netloc=netloc).geturl()
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        client = self._http_client()
        request = client.build_request(
            "POST",
            pinned,
            content=body,
            headers={**headers, "Host": host_header},
            extensions={"sni_hostname": host},
        )
        response = await client.send(request, stream=True, follow_redirects=False)
        await response.aclose()
        return response.status_code

    def _http_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout_s),
                follow_redirects=False,
                trust_env=False,  # no proxy from the environment: addresses are pinned
                transport=self._transport,
                # No reuse: a pooled connection is keyed by address, and two hosts
                # behind one address need their own TLS handshakes (SNI).
                limits=httpx.Limits(
                    max_connections=self._concurrency * 2, max_keepalive_connections=0
                ),
            )
        return self._client

    async def _connection(self) -> psycopg.AsyncConnection[TupleRow]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=2,
                application_name="passerelle-webhooks",
            )
        return self._conn

    async def _close_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
