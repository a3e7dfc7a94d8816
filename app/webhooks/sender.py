"""Sending queued webhook deliveries: claimed with ``SKIP LOCKED`` and a lease, signed, retried with backoff.

Several senders may run (``consent serve`` and every ``consent worker``); a claim moves the delivery's
``next_attempt_at`` past its lease, so a sender that dies leaves nothing stuck: the row is claimed again after it.
The destination is checked before each batch (:mod:`app.webhooks.destinations`: public addresses only, unless
allowed), and every request goes through the outbound guard (:mod:`app.lib.outbound`), which resolves the name
once, checks the addresses again and connects to the one it checked (a name re-pointed since cannot redirect it).
Any 2xx answer delivers; anything else (an error status, a redirect, a timeout, a refused connection) is retried
with exponential backoff until :attr:`SenderConfig.max_attempts`, then the delivery is ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import msgspec
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.db import Database
from app.lib.keys import Keys
from app.lib.outbound import GuardedTransport
from app.lib.rounds import backoff, work_until
from app.lib.signatures import sign
from app.webhooks import repository
from app.webhooks.destinations import DestinationRefused, check_destination
from app.webhooks.repository import ClaimedDelivery
from app.webhooks.service import sealing_context

log = structlog.get_logger(__name__)

USER_AGENT = "consent-service-webhooks/1"


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """How a sender works."""

    batch: int = 50
    concurrency: int = 8
    timeout: float = 10.0
    lease_seconds: float = 60.0
    base_backoff: float = 30.0
    max_backoff: float = 6 * 3600.0
    max_attempts: int = 12  # with the defaults: retried for about a day and a half
    idle_sleep: float = 1.0


@dataclass(frozen=True, slots=True)
class _Outcome:
    delivered: bool
    status: int | None
    error: str | None


class WebhookSender:
    """Delivers what the outbox holds, for every workspace."""

    def __init__(
        self,
        database: Database,
        keys: Keys,
        config: SenderConfig | None = None,
        *,
        allow_private: bool = False,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.database = database
        self.keys = keys
        self.config = config or SenderConfig()
        self.allow_private = allow_private
        self._client = client

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set; sleeps briefly when nothing is due."""
        async with self._http() as client:
            await work_until(
                stop, functools.partial(self.run_once, client), self.config.idle_sleep, failed="webhook_round_failed"
            )

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._client is not None:
            yield self._client
            return
        # the scheme was checked when the subscription was made (CONSENT_WEBHOOKS_ALLOW_HTTP); the addresses, here
        transport = GuardedTransport(allow_private=self.allow_private, allow_http=True, deadline=self.config.timeout)
        async with httpx.AsyncClient(
            timeout=self.config.timeout, follow_redirects=False, headers={"User-Agent": USER_AGENT}, transport=transport
        ) as client:
            yield client

    async def run_once(self, client: httpx.AsyncClient | None = None) -> int:
        """Claim one batch, send it, record the outcomes; returns how many were claimed."""
        async with self.database.sessionmaker() as session, session.begin():
            claimed = await repository.claim_due(
                session, lease_seconds=self.config.lease_seconds, batch=self.config.batch
            )
            targets = await repository.targets(session, [c.subscription_id for c in claimed])
        if not claimed:
            return 0
        limit = asyncio.Semaphore(self.config.concurrency)
        refused: dict[uuid.UUID, str | None] = {}  # the destination checked once per subscription and batch
        for target in targets.values():
            try:
                await check_destination(target.url, allow_private=self.allow_private)
                refused[target.id] = None
            except DestinationRefused as exc:
                refused[target.id] = str(exc)

        async def one(item: ClaimedDelivery, http: httpx.AsyncClient) -> tuple[ClaimedDelivery, _Outcome]:
            target = targets.get(item.subscription_id)
            if target is None:  # deleted meanwhile: its deliveries went with it
                return item, _Outcome(delivered=False, status=None, error="the subscription was deleted")
            if refused[target.id] is not None:  # the name was pointed at an internal address since
                return item, _Outcome(delivered=False, status=None, error=refused[target.id])
            secret = self.keys.unseal(target.secret_sealed, sealing_context(target.id))
            async with limit:
                return item, await _post(http, target.url, secret, item, deadline=self.config.timeout)

        async with contextlib.AsyncExitStack() as stack:
            http = client if client is not None else await stack.enter_async_context(self._http())
            outcomes = await asyncio.gather(*(one(item, http) for item in claimed))
        async with self.database.sessionmaker() as session, session.begin():
            for item, outcome in outcomes:
                await self._record(session, item, outcome)
        return len(claimed)

    async def _record(self, session: AsyncSession, item: ClaimedDelivery, outcome: _Outcome) -> None:
        if outcome.delivered:
            log.info("webhook_delivered", delivery_id=str(item.id), status=outcome.status, attempt=item.attempts)
            await repository.mark_delivered(session, item.id, item.attempts, outcome.status)
            return
        give_up = item.attempts >= self.config.max_attempts
        delay = backoff(item.attempts, self.config.base_backoff, self.config.max_backoff)
        log.warning(
            "webhook_failed" if give_up else "webhook_retry_scheduled",
            delivery_id=str(item.id),
            status=outcome.status,
            error=outcome.error,
            attempt=item.attempts,
        )
        await repository.schedule_retry(
            session, item.id, item.attempts, status=outcome.status, error=outcome.error, delay=delay, give_up=give_up
        )


async def _post(
    client: httpx.AsyncClient, url: str, secret: str, item: ClaimedDelivery, *, deadline: float
) -> _Outcome:
    """POST one delivery; only the status is read (the answer's body is never read, however large it is).

    ``deadline`` bounds the whole exchange: httpx's own timeout is per step, which a receiver answering a byte at
    a time never trips, and one slow receiver must not hold up the batch of every workspace.
    """
    body = msgspec.json.encode(item.payload)
    headers = {
        "Content-Type": "application/json",
        "X-Consent-Signature": sign(secret, body, int(time.time())),
        "X-Consent-Event-Id": str(item.event_id),
        "X-Consent-Event-Type": item.event_type,
        "User-Agent": USER_AGENT,
    }
    try:
        async with asyncio.timeout(deadline), client.stream("POST", url, content=body, headers=headers) as response:
            status = response.status_code
    except (httpx.HTTPError, TimeoutError) as exc:
        return _Outcome(delivered=False, status=None, error=f"{type(exc).__name__}: {exc}"[:500])
    if 200 <= status < 300:  # noqa: PLR2004
        return _Outcome(delivered=True, status=status, error=None)
    return _Outcome(delivered=False, status=status, error=f"HTTP {status}")
