"""All SQL of the shared plumbing's tables (:mod:`app.lib.models`); every statement is scoped to one workspace."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.ids import uuid7
from app.lib.models import IdempotencyKey, ProviderCallback, RateLimitHit
from app.lib.orm import utcnow

# --- idempotency keys --------------------------------------------------------------------------------------


async def claim_idempotency_key(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    key: str,
    fingerprint: bytes,
    *,
    now: datetime,
    retention: timedelta,
    abandoned_after: timedelta,
) -> bool:
    """Claim ``key`` for a new request; False when it is held (answered, or still running)."""
    claimed = await session.scalar(
        upsert(IdempotencyKey)
        .values(workspace_id=workspace_id, key=key, fingerprint=fingerprint, created_at=now)
        .on_conflict_do_update(
            index_elements=["workspace_id", "key"],
            set_={"fingerprint": fingerprint, "created_at": now},
            # an expired key is free again; so is a claim a crashed process left behind
            where=or_(
                IdempotencyKey.created_at < now - retention,
                (IdempotencyKey.completed_at.is_(None)) & (IdempotencyKey.created_at < now - abandoned_after),
            ),
        )
        .returning(IdempotencyKey.key)
    )
    return claimed is not None


async def keep_idempotency_answer(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    key: str,
    fingerprint: bytes,
    *,
    now: datetime,
    retention: timedelta,
    abandoned_after: timedelta,
    status: int,
    headers: str,
    body: bytes | None,
) -> bool:
    """Claim ``key`` and keep its answer in one statement, in the caller's transaction; False when it is held.

    A concurrent transaction that wrote the same key and has not ended yet makes this wait for it (the unique
    index): after its commit the key is held (False), after its rollback this claims it. A key free again (expired,
    or a claim a crashed process left behind) is taken over, as :func:`claim_idempotency_key` does.
    """
    claimed = await session.scalar(
        upsert(IdempotencyKey)
        .values(
            workspace_id=workspace_id,
            key=key,
            fingerprint=fingerprint,
            created_at=now,
            completed_at=now,
            status=status,
            headers=headers,
            body=body,
        )
        .on_conflict_do_update(
            index_elements=["workspace_id", "key"],
            set_={
                "fingerprint": fingerprint,
                "created_at": now,
                "completed_at": now,
                "status": status,
                "headers": headers,
                "body": body,
            },
            where=or_(
                IdempotencyKey.created_at < now - retention,
                (IdempotencyKey.completed_at.is_(None)) & (IdempotencyKey.created_at < now - abandoned_after),
            ),
        )
        .returning(IdempotencyKey.key)
    )
    return claimed is not None


def keep_idempotency_answer_sql(source: str, *params: str) -> str:
    """The statement of :func:`keep_idempotency_answer_on_driver` for asyncpg, to compose into a caller's statement.

    ``source`` is what the row is selected from (``FROM`` and ``WHERE``: a key is claimed only when ``source``
    yields a row); ``params`` are the SQL expressions of the workspace, key, fingerprint, now, status, headers,
    body, retention (an interval) and abandoned-after (an interval), in this order. Answers ``k.key`` when the key
    was claimed, no row when it is held (the caller's work must then depend on this statement's row).
    """
    workspace, key, fingerprint, now, status, headers, body, retention, abandoned_after = params
    # built from the callers' own constant SQL (placeholders, casts), never from a value
    return f"""
    INSERT INTO idempotency_keys AS k (workspace_id, key, fingerprint, created_at, completed_at, status, headers, body)
    SELECT {workspace}, {key}, {fingerprint}, {now}, {now}, {status}, {headers}, {body} {source}
    ON CONFLICT (workspace_id, key) DO UPDATE
       SET fingerprint = excluded.fingerprint, created_at = excluded.created_at,
           completed_at = excluded.completed_at, status = excluded.status, headers = excluded.headers,
           body = excluded.body
     WHERE k.created_at < {now}::timestamptz - {retention}::interval
        OR (k.completed_at IS NULL AND k.created_at < {now}::timestamptz - {abandoned_after}::interval)
    RETURNING k.key
"""  # noqa: S608


_KEEP_ANSWER_DRIVER = keep_idempotency_answer_sql("", "$1", "$2", "$3", "$4::timestamptz", "$5", "$6", "$7", "$8", "$9")


async def keep_idempotency_answer_on_driver(
    connection: Any,
    workspace_id: uuid.UUID,
    key: str,
    fingerprint: bytes,
    *,
    now: datetime,
    retention: timedelta,
    abandoned_after: timedelta,
    status: int,
    headers: str,
    body: bytes | None,
) -> bool:
    """:func:`keep_idempotency_answer` on a raw asyncpg ``connection`` (in its open transaction)."""
    claimed = await connection.fetchval(
        _KEEP_ANSWER_DRIVER, workspace_id, key, fingerprint, now, status, headers, body, retention, abandoned_after
    )
    return claimed is not None


_HELD_KEY = """
    SELECT fingerprint, status, headers, body FROM idempotency_keys
    WHERE workspace_id = $1 AND key = $2
      AND created_at >= $3::timestamptz - $4::interval
      AND NOT (completed_at IS NULL AND created_at < $3::timestamptz - $5::interval)
"""


async def held_idempotency_key(
    connection: Any,
    workspace_id: uuid.UUID,
    key: str,
    *,
    now: datetime,
    retention: timedelta,
    abandoned_after: timedelta,
) -> tuple[bytes, int | None, str | None, bytes | None] | None:
    """``key``'s fingerprint and answer (status, headers, body) when it is held, on a raw asyncpg ``connection``.

    Held: neither expired nor a claim a crashed process left behind (those are free, as for
    :func:`claim_idempotency_key`). One statement, no transaction: the hot path of a request with a new key.
    """
    row = await connection.fetchrow(_HELD_KEY, workspace_id, key, now, retention, abandoned_after)
    if row is None:
        return None
    return bytes(row[0]), row[1], row[2], None if row[3] is None else bytes(row[3])


async def get_idempotency_key(session: AsyncSession, workspace_id: uuid.UUID, key: str) -> IdempotencyKey | None:
    """The claim of ``key``, with its answer once known."""
    return await session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.workspace_id == workspace_id, IdempotencyKey.key == key)
    )


async def complete_idempotency_key(
    session: AsyncSession, workspace_id: uuid.UUID, key: str, *, status: int, headers: str, body: bytes | None
) -> None:
    """Keep the first answer of ``key``."""
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.workspace_id == workspace_id, IdempotencyKey.key == key)
        .values(completed_at=utcnow(), status=status, headers=headers, body=body)
    )


async def release_idempotency_key(session: AsyncSession, workspace_id: uuid.UUID, key: str) -> None:
    """Free ``key``: its request failed in a way that must run again on a retry."""
    await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.workspace_id == workspace_id, IdempotencyKey.key == key)
    )


async def prune_idempotency_keys(session: AsyncSession, before: datetime) -> None:
    """Forget every workspace's keys claimed before ``before`` (the sweep)."""
    await session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < before))


# --- rate limits -------------------------------------------------------------------------------------------


#: The ``headers`` of a key whose answer named a contact erased since (:func:`erase_answers_naming`).
ERASED_ANSWER = "erased"


async def erase_answers_naming(session: AsyncSession, workspace_id: uuid.UUID, contact_id: uuid.UUID) -> int:
    """Erase the workspace's stored idempotent answers whose body names the contact (by its id); answers how many.

    The key stays held until it expires, its answer and its request's fingerprint gone (:data:`ERASED_ANSWER`): a
    retry of the request must not do again what the erasure undid (a signup retried after the erasure made the
    contact anew and mailed the person: newcomer review); it is answered ``idempotency_answer_erased``.
    """
    result = await session.execute(
        text(
            "UPDATE idempotency_keys SET body = NULL, headers = :erased, fingerprint = ''::bytea"
            " WHERE workspace_id = :workspace_id AND body IS NOT NULL"
            " AND position(convert_to(:contact_text, 'UTF8') IN body) > 0"
        ),
        {"workspace_id": workspace_id, "contact_text": str(contact_id), "erased": ERASED_ANSWER},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of an UPDATE


async def lock_counter(session: AsyncSession, key: bytes) -> None:
    """Serialise takers of one counter until the transaction ends (advisory lock on the key's first 8 bytes)."""
    await session.execute(select(func.pg_advisory_xact_lock(int.from_bytes(key[:8], "big", signed=True))))


async def recent_hits(
    session: AsyncSession, workspace_id: uuid.UUID, key: bytes, *, since: datetime, limit: int
) -> Sequence[datetime]:
    """The newest hits of a counter after ``since``, newest first, at most ``limit``."""
    return (
        await session.scalars(
            select(RateLimitHit.at)
            .where(RateLimitHit.workspace_id == workspace_id, RateLimitHit.key == key, RateLimitHit.at > since)
            .order_by(RateLimitHit.at.desc())
            .limit(limit)
        )
    ).all()


async def add_hits(session: AsyncSession, workspace_id: uuid.UUID, keys: Sequence[bytes], at: datetime) -> None:
    """Count one hit on each of ``keys``."""
    await session.execute(insert(RateLimitHit), [{"workspace_id": workspace_id, "key": key, "at": at} for key in keys])


async def prune_hits(session: AsyncSession, before: datetime) -> None:
    """Forget every workspace's hits older than ``before`` (no limit looks back that far)."""
    await session.execute(delete(RateLimitHit).where(RateLimitHit.at < before))


# --- provider callbacks ------------------------------------------------------------------------------------


async def claim_callback(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    provider: str,
    message_id: str,
    status: str,
    error: str | None,
) -> bool:
    """Record a provider callback once per (provider, message id, status); False when it was seen before.

    ``error`` must be a code, never a provider's free text: diagnostics name the recipient, and these rows
    outlive an erasure (they are pruned after :data:`CALLBACKS_KEPT`).
    """
    claimed = await session.scalar(
        upsert(ProviderCallback)
        .values(
            id=uuid7(),
            workspace_id=workspace_id,
            provider=provider,
            message_sid=message_id,
            status=status,
            error_code=error[:500] if error else None,
            received_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["workspace_id", "provider", "message_sid", "status"])
        .returning(ProviderCallback.id)
    )
    return claimed is not None


#: How long provider callbacks are remembered: providers retry a callback for hours, at most a few days.
CALLBACKS_KEPT = timedelta(days=30)


async def prune_callbacks(session: AsyncSession, now: datetime) -> int:
    """Forget provider callbacks older than :data:`CALLBACKS_KEPT`; answers how many."""
    result = await session.execute(delete(ProviderCallback).where(ProviderCallback.received_at < now - CALLBACKS_KEPT))
    return int(result.rowcount)  # type: ignore[attr-defined]  # CursorResult of a DELETE
