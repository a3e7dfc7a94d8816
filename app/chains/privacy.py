"""The chains' part of a data-subject request: the person's chain runs (their variables and each step's decision)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.chains import repository, service
from app.lib.privacy import PrivacyHook, Subject


async def _export(session: AsyncSession, subject: Subject) -> Mapping[str, Any]:
    runs = await repository.runs_of_contact(session, subject.workspace_id, subject.contact_id)
    return {"chain_runs": [await service.show_run(session, subject.workspace_id, run) for run in runs]}


async def _erase(session: AsyncSession, subject: Subject) -> Mapping[str, int]:
    return {"chain_runs": await repository.delete_runs_of_contact(session, subject.workspace_id, subject.contact_id)}


HOOK = PrivacyHook(
    package="chains",
    tables={
        "chain_runs": "deleted (the run's variables, campaign and batch item key)",
        "chain_steps": "deleted with their run",
    },
    erase=_erase,
    export=_export,
)
