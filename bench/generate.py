"""Load a benchmark data set with COPY: N contacts with contact points on all six channels in mixed states.

Every contact has an email address; SMS, WhatsApp, app push, web push and print addresses are added at random.
Consent states, reachability and suppressions are mixed so that every rule of the send gate is exercised.
The projection rows are written directly (no ledger events): this is a read benchmark.

    uv run python bench/generate.py --database-url postgresql://… --contacts 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from app.lib.auth import Scope
from app.lib.ids import uuid7
from app.lib.keys import Keys

CHANNELS = ("sms", "whatsapp", "app_push", "web_push", "print")
STATES = (("opted_in", 70), ("pending", 8), ("opted_out", 12), ("expired", 4), ("declined", 3), ("none", 3))
BENCH_SECRET = b"benchmark-secret-not-for-production!"


def pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    """A weighted choice."""
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


async def generate(dsn: str, contacts: int, seed: int) -> dict[str, str]:
    """Create a workspace, purposes and keys, then COPY the data; returns ids and secrets for the runner."""
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine  # noqa: PLC0415

    from app.purposes.service import create_purpose  # noqa: PLC0415
    from app.workspaces.service import create_api_key, create_workspace  # noqa: PLC0415

    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
    async with async_sessionmaker(engine, expire_on_commit=False)() as session, session.begin():
        workspace = await create_workspace(session, "Benchmark")
        newsletter = await create_purpose(session, workspace.id, "newsletter", "Newsletter", "marketing")
        await create_purpose(session, workspace.id, "order_updates", "Order updates", "transactional")
        _, secret = await create_api_key(session, workspace.id, "bench", [Scope.ADMIN])
    await engine.dispose()

    rng = random.Random(seed)  # reproducible data, not cryptography
    keys = Keys(BENCH_SECRET)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    contact_rows, point_rows, consent_rows, suppression_rows = [], [], [], []
    for i in range(contacts):
        contact_id = uuid7()
        contact_rows.append((contact_id, workspace.id, f"c{i}", "de", rng.choice(["Europe/Berlin", None])))
        channels = ["email", *(c for c in CHANNELS if rng.random() < 0.35)]
        for channel in channels:
            point_id = uuid7()
            value = f"user{i}@example.com" if channel == "email" else f"{channel}-{i}"
            reachability = (
                "reachable" if rng.random() > 0.03 else rng.choice(["undeliverable", "provider_blocked", "expired"])
            )
            point_keys = keys.point_keys(channel, value, {})
            point_rows.append((point_id, workspace.id, contact_id, channel, value, "{}", reachability, point_keys))
            if channel == "print":
                state = "objected" if rng.random() < 0.05 else None
                if state:
                    consent_rows.append(_consent(workspace.id, contact_id, point_id, None, channel, state, base, rng))
            else:
                state = pick(rng, STATES)
                if state != "none":
                    consent_rows.append(
                        _consent(workspace.id, contact_id, point_id, newsletter.id, channel, state, base, rng)
                    )
            if rng.random() < 0.01:
                suppression_rows.append(
                    (uuid7(), workspace.id, point_keys[0], 1, channel, "all_marketing", None, "objection_art21")
                )
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "contacts", records=contact_rows, columns=["id", "workspace_id", "external_id", "locale", "timezone"]
            )
            await conn.copy_records_to_table(
                "contact_points",
                records=point_rows,
                columns=[
                    "id",
                    "workspace_id",
                    "contact_id",
                    "channel",
                    "value",
                    "details",
                    "reachability",
                    "suppression_keys",
                ],
            )
            await conn.copy_records_to_table(
                "consents",
                records=consent_rows,
                columns=[
                    "id",
                    "workspace_id",
                    "contact_id",
                    "contact_point_id",
                    "purpose_id",
                    "channel",
                    "state",
                    "legal_basis",
                    "since",
                    "last_event_id",
                    "version",
                ],
            )
            await conn.copy_records_to_table(
                "suppressions",
                records=suppression_rows,
                columns=["id", "workspace_id", "key", "key_version", "channel", "scope", "purpose_id", "reason"],
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    print(
        f"loaded {len(contact_rows):,} contacts, {len(point_rows):,} contact points, {len(consent_rows):,} consents, "
        f"{len(suppression_rows):,} suppressions in {time.perf_counter() - started:.1f} s (COPY + ANALYZE)"
    )
    return {"workspace_id": str(workspace.id), "api_key": secret, "contacts": str(contacts)}


def _consent(
    workspace_id: uuid.UUID,
    contact_id: uuid.UUID,
    point_id: uuid.UUID,
    purpose_id: uuid.UUID | None,
    channel: str,
    state: str,
    base: datetime,
    rng: random.Random,
) -> tuple[object, ...]:
    basis = "consent" if state == "opted_in" else None
    since = base + timedelta(seconds=rng.randint(0, 300 * 86400))
    return (uuid7(), workspace_id, contact_id, point_id, purpose_id, channel, state, basis, since, uuid7(), 1)


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True, help="postgresql:// URL of a migrated database")
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(asyncio.run(generate(args.database_url, args.contacts, args.seed)))


if __name__ == "__main__":
    main()
