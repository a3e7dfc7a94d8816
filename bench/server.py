"""The service plus a baseline endpoint in the same process: one raw asyncpg primary-key read.

uv run python bench/server.py --database-url postgresql://… --port 8790
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import asyncpg
import msgspec
import uvicorn
from litestar import Litestar, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from app.main import create_app
from app.settings import DatabaseSettings, Settings

BENCH_SECRET = b"benchmark-secret-not-for-production!"


@get("/bench/baseline/{contact_id:uuid}", opt={"public": True}, include_in_schema=False)
async def baseline(contact_id: FromPath[uuid.UUID], state: State) -> dict[str, Any]:
    """The floor: one primary-key read through a raw asyncpg pool, no auth, no ORM."""
    pool: asyncpg.Pool = state.bench_pool
    row = await pool.fetchrow("SELECT id, external_id FROM contacts WHERE id = $1", contact_id)
    return {"id": str(row["id"]), "external_id": row["external_id"]} if row else {}


class BaselineBatch(msgspec.Struct):
    """The batch request's contacts (the rest of the body is ignored)."""

    contacts: list[str]


@post("/bench/baseline/batch/{workspace_id:uuid}", opt={"public": True}, include_in_schema=False, status_code=200)
async def baseline_batch(workspace_id: FromPath[uuid.UUID], data: BaselineBatch, state: State) -> list[dict[str, Any]]:
    """The batch floor: the same references resolved by one raw asyncpg read (an index probe each), no gate."""
    pool: asyncpg.Pool = state.bench_pool
    rows = await pool.fetch(
        """
        SELECT c.id, c.external_id
          FROM unnest($2::text[]) AS r(ref)
          CROSS JOIN LATERAL (SELECT id, external_id FROM contacts
                               WHERE workspace_id = $1 AND external_id = r.ref OFFSET 0) c
        """,
        workspace_id,
        data.contacts,
    )
    return [{"id": str(row["id"]), "external_id": row["external_id"]} for row in rows]


def build(dsn: str, pool_size: int) -> Litestar:
    """The app on ``dsn`` with the baseline route and its pool."""
    settings = Settings(
        secret_key=BENCH_SECRET,
        log_level="warning",
        log_format="json",
        database=DatabaseSettings(url=dsn.replace("postgresql://", "postgresql+asyncpg://", 1), pool_size=pool_size),
    )
    app = create_app(settings)

    async def open_pool(application: Litestar) -> None:
        application.state.bench_pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)

    async def close_pool(application: Litestar) -> None:
        await application.state.bench_pool.close()

    app.on_startup.append(open_pool)
    app.on_shutdown.append(close_pool)
    app.register(baseline)
    app.register(baseline_batch)
    return app


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args()
    uvicorn.run(
        build(args.database_url, args.pool_size),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


if __name__ == "__main__":
    main()
