"""Defining chains (validated strictly, versioned by key), starting, showing and cancelling runs.

A run's steps are written when it starts, all ``pending``; only the first has a ``due_at``. The chain runner
(:mod:`app.chains.runner`) decides a step when it is due and then arms the next one, so steps are decided in
order and a ``when`` always sees its earlier steps decided.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from html import escape
from typing import Any, NamedTuple

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.chains import durations, repository
from app.chains.models import Chain, ChainRun, ChainStep, RunStatus, StepStatus
from app.chains.schemas import (
    ChainIn,
    ChainOut,
    ChainReport,
    ItemError,
    RunIn,
    RunItemIn,
    RunOut,
    RunsBatchItem,
    StepIn,
    StepOut,
    StepReport,
)
from app.domain import content as content_rules
from app.domain.model import Channel
from app.ledger import service as ledger
from app.ledger.service import require_contact, require_contact_on_driver
from app.lib.errors import AppError, InvalidInput, NotFound, item_validation_detail
from app.lib.idempotency import KeptAnswer
from app.lib.ids import uuid7
from app.lib.orm import utcnow
from app.purposes import repository as purposes

#: ``{{name}}`` in a step's content: replaced by the run's variable ``name``.
PLACEHOLDER = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]{0,62})\s*\}\}")


def _invalid(field: str, message: str, code: str) -> InvalidInput:
    return InvalidInput(
        f"{field}: {message.rstrip('.')}.", code=code, extra={"errors": [{"field": field, "message": message}]}
    )


async def define_chain(session: AsyncSession, workspace_id: uuid.UUID, data: ChainIn) -> tuple[Chain, bool]:
    """A new version of the chain ``data.key`` (version 1 for a new key); answers it and whether it was created.

    The newest version's exact definition again returns that version unchanged.
    """
    purpose = await purposes.get_by_key(session, workspace_id, data.purpose)
    if purpose is None:
        raise _invalid("purpose", f"no purpose with key '{data.purpose}'", "purpose_not_found")
    every = {step.key for step in data.steps}
    steps = [_checked_step(i, step, data.steps[:i], every) for i, step in enumerate(data.steps)]
    await repository.lock_key(session, workspace_id, data.key)
    latest = await repository.newest(session, workspace_id, data.key)
    if (
        latest is not None
        and latest.purpose_id == purpose.id
        and latest.steps == steps
        and latest.stop_on_opt_out == data.stop_on_opt_out
    ):
        return latest, False
    chain = await repository.add_chain(
        session,
        Chain(
            workspace_id=workspace_id,
            key=data.key,
            version=(latest.version if latest else 0) + 1,
            purpose_id=purpose.id,
            steps=steps,
            stop_on_opt_out=data.stop_on_opt_out,
        ),
    )
    return chain, True


def _checked_step(index: int, step: StepIn, earlier: Sequence[StepIn], every: set[str]) -> dict[str, Any]:
    """One step checked (keys, condition, delay, route and content as ``POST /v1/messages``), as stored."""
    at = f"steps[{index}]"
    if step.key in {e.key for e in earlier}:
        raise _invalid(f"{at}.key", f"'{step.key}' is used by an earlier step; step keys are unique", "duplicate_step")
    try:
        durations.parse(step.after)
    except durations.DurationError as exc:
        raise _invalid(f"{at}.after", str(exc), "invalid_duration") from None
    if step.when is not None:
        _check_when(at, step, earlier, every)
    given = msgspec.to_builtins(step.content)
    for channel in dict.fromkeys(step.route):
        content = given.get(channel.value)
        if content is None:
            raise _invalid(
                f"{at}.content.{channel}", f"the route names {channel} but its content is missing", "content_missing"
            )
        try:
            content_rules.check(channel, content)
        except content_rules.ContentError as exc:
            raise _invalid(f"{at}.content.{channel}", str(exc), exc.code) from None
    route = [c.value for c in dict.fromkeys(step.route)]
    stored: dict[str, Any] = {
        "key": step.key,
        "route": route,
        "strategy": step.strategy,
        "content": {c: v for c, v in given.items() if c in route},
        "after": step.after,
        "after_previous": step.after_previous,
        "on_unknown": step.on_unknown,
    }
    if step.when is not None:
        stored["when"] = msgspec.to_builtins(step.when)
    return stored


def _check_when(at: str, step: StepIn, earlier: Sequence[StepIn], every: set[str]) -> None:
    when = step.when
    assert when is not None
    if (when.all is None) == (when.any is None):
        raise _invalid(f"{at}.when", "give exactly one of `all` and `any`", "invalid_condition")
    keys = [e.key for e in earlier]
    for j, term in enumerate(when.all or when.any or []):
        field = f"{at}.when.{'all' if when.all is not None else 'any'}[{j}]"
        if (term.has is None) == (term.has_not is None):
            raise _invalid(field, "give exactly one of `has` and `has_not`", "invalid_condition")
        if term.step in keys:
            continue
        if term.step in every:
            message = f"'{term.step}' is not an earlier step; a condition may only name steps before this one"
            raise _invalid(f"{field}.step", message, "condition_not_earlier")
        raise _invalid(f"{field}.step", f"no step '{term.step}' in this chain", "unknown_step")


def chain_out(chain: Chain, purpose_key: str) -> ChainOut:
    """A chain version as the API shows it."""
    return ChainOut(
        id=chain.id,
        key=chain.key,
        version=chain.version,
        purpose=purpose_key,
        steps=msgspec.convert(chain.steps, list[StepIn]),
        stop_on_opt_out=chain.stop_on_opt_out,
        created_at=chain.created_at,
    )


async def require_chain(session: AsyncSession, workspace_id: uuid.UUID, chain_id: uuid.UUID) -> Chain:
    """A chain version of the workspace, or 404 (the same for another workspace's)."""
    chain = await repository.get_chain(session, workspace_id, chain_id)
    if chain is None:
        raise NotFound("No chain with this id.", code="chain_not_found")
    return chain


async def show_chain(session: AsyncSession, workspace_id: uuid.UUID, chain: Chain) -> ChainOut:
    """A chain version with its purpose's key."""
    by_id = await purposes.purposes_by_id(session, workspace_id)
    return chain_out(chain, by_id[chain.purpose_id].key)


async def list_chains(session: AsyncSession, workspace_id: uuid.UUID, key: str | None) -> list[ChainOut]:
    """The workspace's chain versions (of one key), by key and version."""
    by_id = await purposes.purposes_by_id(session, workspace_id)
    return [chain_out(c, by_id[c.purpose_id].key) for c in await repository.list_chains(session, workspace_id, key)]


def placeholders(steps: Sequence[Mapping[str, Any]]) -> set[str]:
    """The variable names the steps' content uses."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.update(PLACEHOLDER.findall(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for step in steps:
        walk(step["content"])
    return found


#: The longest text one filled field may become (the longest content field, an email's HTML, takes 500,000):
#: checked before the text is built, so variables repeated by many placeholders cannot make it huge
MAX_FILLED = 500_000


class ContentTooLarge(ValueError):
    """The variables would make a field longer than :data:`MAX_FILLED`."""


def fill(value: Any, variables: Mapping[str, str], *, html: bool = False) -> Any:
    """``value`` (a step's content) with every ``{{name}}`` replaced by its variable: plain text substitution.

    In an email's ``html`` a value is HTML-escaped: it is text the caller passed (a name, a code), never markup,
    so a variable cannot put a link or an image into a brand's mail. :class:`ContentTooLarge` when a field would
    grow past :data:`MAX_FILLED`.
    """
    if isinstance(value, str):
        found = PLACEHOLDER.findall(value)
        grown = len(value) + sum(len(variables.get(name, "")) for name in found)
        if grown > MAX_FILLED:
            raise ContentTooLarge(f"the variables would make a field {grown} characters long")
        return PLACEHOLDER.sub(lambda m: _value(variables, m, html=html), value)
    if isinstance(value, dict):
        return {k: fill(v, variables, html=html or k == "html") for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, variables, html=html) for v in value]
    return value


def _value(variables: Mapping[str, str], match: re.Match[str], *, html: bool) -> str:
    found = variables.get(match.group(1))
    if found is None:
        return match.group(0)
    return escape(found, quote=True) if html else found


async def start_run(session: AsyncSession, workspace_id: uuid.UUID, chain_id: uuid.UUID, data: RunIn) -> ChainRun:
    """Write the run and its steps; the first step is due after its delay, the others wait for their turn."""
    chain = await require_chain(session, workspace_id, chain_id)
    contact = await require_contact(session, workspace_id, data.contact)
    run, steps = _new_run(workspace_id, chain.id, chain.steps, contact.id, data)
    await repository.add_run(session, run, steps)
    return run


async def start_run_on_driver(connection: Any, workspace_id: uuid.UUID, chain_id: uuid.UUID, data: RunIn) -> uuid.UUID:
    """:func:`start_run` on a raw asyncpg ``connection``, in its open transaction; answers the run's id.

    The hot path of ``POST /v1/chains/{id}/runs`` (issue 20 asks for 2,000 runs/s): the same checks, errors and
    rows, without the ORM's cost per statement.
    """
    chain_steps = await repository.chain_steps_on_driver(connection, workspace_id, chain_id)
    if chain_steps is None:
        raise NotFound("No chain with this id.", code="chain_not_found")
    contact_id = await require_contact_on_driver(connection, workspace_id, data.contact)
    run, steps = _new_run(workspace_id, chain_id, chain_steps, contact_id, data)
    await repository.add_run_on_driver(connection, run, steps)
    return run.id


class RunPlan(NamedTuple):
    """What starting a run of a chain version needs of its steps (:func:`start_keyed_run`)."""

    keys: tuple[str, ...]
    first_after: timedelta
    variables: frozenset[str]
    """The variable names the steps' content uses: a run must give each."""


def run_plan(chain_steps: Sequence[Mapping[str, Any]]) -> RunPlan:
    """The plan of a chain version's stored steps."""
    return RunPlan(
        keys=tuple(step["key"] for step in chain_steps),
        first_after=durations.parse(chain_steps[0]["after"]),
        variables=frozenset(placeholders(chain_steps)),
    )


class RunPlans:
    """The plans of recently started chain versions, by workspace and chain id: spares the hot path a read.

    A chain version never changes (a new definition is a new version, with an id of its own), so a plan stays
    right for as long as its chain exists. A chain goes only with its workspace (``ON DELETE CASCADE``), in this
    process or another: the run's foreign key to its chain then fails the run's statement, which drops the plan
    (:func:`start_keyed_run`). Keyed by the workspace too: a workspace's plan is never another's.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._plans: dict[tuple[uuid.UUID, uuid.UUID], RunPlan] = {}

    def get(self, workspace_id: uuid.UUID, chain_id: uuid.UUID) -> RunPlan | None:
        """The plan of the workspace's chain version, if known."""
        return self._plans.get((workspace_id, chain_id))

    def put(self, workspace_id: uuid.UUID, chain_id: uuid.UUID, plan: RunPlan) -> None:
        """Remember a plan read from the database."""
        if len(self._plans) >= self.size:
            self._plans.clear()
        self._plans[workspace_id, chain_id] = plan

    def forget(self, workspace_id: uuid.UUID, chain_id: uuid.UUID) -> None:
        """Drop a plan (its chain is gone)."""
        self._plans.pop((workspace_id, chain_id), None)


async def start_keyed_run(  # the request's parts, each checked by the caller
    connection: Any,
    plans: RunPlans,
    workspace_id: uuid.UUID,
    chain_id: uuid.UUID,
    data: RunIn,
    *,
    run_id: uuid.UUID,
    key: KeptAnswer,
) -> bool:
    """:func:`start_run_on_driver` and the request's ``Idempotency-Key`` with its answer, in one statement.

    The hot path of ``POST /v1/chains/{id}/runs`` (issue 20, runs/s): on a raw asyncpg ``connection`` outside a
    transaction: the chain's plan from ``plans`` (read once per process and chain version), then the contact, the
    key, the run and its steps in one statement. True when the run was started; False when nothing was written and
    the route must answer: the contact is unknown or merged (404, 409), the key is held (its answer is replayed, or
    409), or the chain or the contact went away meanwhile. 404 for an unknown chain and 422 for missing variables,
    as :func:`start_run_on_driver`.
    """
    plan = plans.get(workspace_id, chain_id)
    if plan is None:
        chain_steps = await repository.chain_steps_on_driver(connection, workspace_id, chain_id)
        if chain_steps is None:
            raise NotFound("No chain with this id.", code="chain_not_found")
        plan = run_plan(chain_steps)
        plans.put(workspace_id, chain_id, plan)
    _require_variables(plan.variables, data)
    now = utcnow()
    started = await repository.start_keyed_run_on_driver(
        connection,
        run_id=run_id,
        workspace_id=workspace_id,
        chain_id=chain_id,
        contact_ref=data.contact,
        variables=data.variables,
        campaign=data.campaign,
        started_at=now,
        first_due_at=now + plan.first_after,
        step_ids=[uuid7() for _ in plan.keys],
        step_keys=plan.keys,
        key=key,
    )
    if started is None:  # a row it refers to is gone: the chain (with its workspace), or the contact
        plans.forget(workspace_id, chain_id)
        return False
    return started


async def start_runs_on_driver(
    connection: Any, workspace_id: uuid.UUID, chain_id: uuid.UUID, items: Sequence[Mapping[str, Any]]
) -> list[RunsBatchItem]:
    """Start a run for each item that the single call would start, in the caller's transaction on ``connection``.

    ``POST /v1/chains/{id}/runs/batch``: answers every item's outcome in order, the run's id or the error the single
    call (:func:`start_run_on_driver`) would answer, checked in its order: the item's form (422
    ``validation_failed``), the contact (404, 409), the variables (422). An item's ``key`` names one run of the chain
    version: a key already used (by an earlier batch, an earlier item of this one, or a concurrent batch that
    committed first) answers that run when the item names the same contact, variables and campaign, else
    ``idempotency_key_reused``. Set-based: the chain, the contacts (one statement, locked in id order), the keyed
    runs, then every new run and its steps in one statement. 404 for an unknown chain, as the single call.
    """
    chain_steps = await repository.chain_steps_on_driver(connection, workspace_id, chain_id)
    if chain_steps is None:
        raise NotFound("No chain with this id.", code="chain_not_found")
    plan = run_plan(chain_steps)
    outcomes: list[RunsBatchItem] = [RunsBatchItem(index=i) for i in range(len(items))]
    valid: list[tuple[int, RunItemIn]] = []
    for index, raw in enumerate(items):
        try:
            valid.append((index, msgspec.convert(raw, RunItemIn)))
        except msgspec.ValidationError as exc:
            outcomes[index].error = ItemError(code="validation_failed", detail=_item_detail(str(exc)))
    contacts = await ledger.contacts_on_driver(connection, workspace_id, [item.contact for _, item in valid])
    taken = await repository.runs_by_key_on_driver(
        connection, workspace_id, chain_id, {item.key for _, item in valid if item.key is not None}
    )
    new: list[repository.NewRun] = []
    for (index, item), (contact_id, refused) in zip(valid, contacts, strict=True):
        run = _item_run(outcomes[index], item, contact_id, refused, plan, taken)
        if run is not None:
            new.append(run)
    now = utcnow()
    written = await repository.add_runs_on_driver(
        connection, workspace_id, chain_id, new, plan.keys, started_at=now, first_due_at=now + plan.first_after
    )
    if len(written) < len(new):
        lost = {run.id: run for run in new if run.id not in written}
        held = await repository.runs_by_key_on_driver(
            connection, workspace_id, chain_id, {run.key for run in lost.values() if run.key is not None}
        )
        _answer_runs_taken_meanwhile(lost, held, outcomes, valid)
    return outcomes


def _item_detail(error: str) -> str:
    """An item's refusal in words; a bad ``key`` as the ``Idempotency-Key`` header's is said (not as its regex)."""
    detail = item_validation_detail(error)
    if detail.startswith("key: Expected `str` matching regex"):
        return "key: must be 1 to 255 visible ASCII characters, as an Idempotency-Key."
    return detail


def _item_run(  # noqa: PLR0917  # one item's parts, each checked in the single call's order
    outcome: RunsBatchItem,
    item: RunItemIn,
    contact_id: uuid.UUID | None,
    refused: AppError | None,
    plan: RunPlan,
    taken: dict[str, repository.KeyedRun],
) -> repository.NewRun | None:
    """The run an item starts (its id set in ``outcome``), or None with the ``outcome`` answered otherwise."""
    if contact_id is None:
        outcome.error = _item_error(refused)
        return None
    if refused is not None:  # merged: as the single call answers it, also for a key whose run moved with the merge
        outcome.error = _MERGED
        return None
    held = taken.get(item.key) if item.key is not None else None
    if held is not None:
        _answer_held(outcome, held, contact_id, item)
        return None
    try:
        _require_variables(plan.variables, item)
    except InvalidInput as exc:
        outcome.error = _item_error(exc)
        return None
    run = repository.NewRun(
        id=uuid7(),
        contact_id=contact_id,
        variables=item.variables,
        campaign=item.campaign,
        key=item.key,
        step_ids=[uuid7() for _ in plan.keys],
    )
    outcome.run_id = run.id
    if item.key is not None:  # a later item with this key is answered with this run
        taken[item.key] = repository.KeyedRun(run.id, contact_id, item.variables, item.campaign)
    return run


def _answer_runs_taken_meanwhile(
    lost: Mapping[uuid.UUID, repository.NewRun],
    held: Mapping[str, repository.KeyedRun],
    outcomes: list[RunsBatchItem],
    valid: Sequence[tuple[int, RunItemIn]],
) -> None:
    """Answer the items whose run was not written (``lost``): a concurrent batch committed a run with its key first.

    Each is answered with that run (``held``: read after the insert waited for the other's commit) as a repeated key
    is.
    """
    for index, item in valid:
        outcome = outcomes[index]
        if outcome.run_id is None or outcome.run_id not in lost:
            continue
        mine = lost[outcome.run_id]
        outcome.run_id = None
        other = held.get(item.key) if item.key is not None else None
        if other is None:  # the other batch's run is gone again (erased): nothing was started; a retry starts it
            outcome.error = ItemError(code="run_key_conflict", detail="A concurrent request used this key; retry.")
        else:
            _answer_held(outcome, other, mine.contact_id, item)


def _answer_held(outcome: RunsBatchItem, held: repository.KeyedRun, contact_id: uuid.UUID, item: RunItemIn) -> None:
    """An item whose key names a run: that run if the item asks for the same run, else 409's code."""
    if (held.contact_id, held.variables, held.campaign) == (contact_id, item.variables, item.campaign):
        outcome.run_id = held.id
    else:
        outcome.error = ItemError(
            code="idempotency_key_reused",
            detail="This key already names a run of this chain version for another contact, variables or campaign.",
        )


#: A merged contact's entry: the single call's code, without the survivor's id. A batch's answer is kept for its
#: ``Idempotency-Key``, and an erasure deletes kept answers naming the erased contact, which would free the key of
#: the whole batch and let a replay start its runs again (hostile review); the contact's record names the survivor.
_MERGED = ItemError(
    code="contact_merged",
    detail="This contact was merged into another; start the run for that one (GET /v1/contacts/{contact} names it).",
)


def _item_error(error: AppError | None) -> ItemError:
    assert error is not None
    return ItemError(code=error.code, detail=error.detail)


def _require_variables(needed: Collection[str], data: RunIn) -> None:
    missing = sorted(set(needed) - set(data.variables or {}))
    if missing:
        raise _invalid("variables", f"the chain's content uses {', '.join(missing)}, not given", "variable_missing")


def _new_run(
    workspace_id: uuid.UUID,
    chain_id: uuid.UUID,
    chain_steps: Sequence[Mapping[str, Any]],
    contact_id: uuid.UUID,
    data: RunIn,
) -> tuple[ChainRun, list[ChainStep]]:
    """The run and its steps (not written), or 422 when the content needs a variable not given."""
    _require_variables(placeholders(chain_steps), data)
    now = utcnow()
    run = ChainRun(
        id=uuid7(),
        workspace_id=workspace_id,
        chain_id=chain_id,
        contact_id=contact_id,
        variables=data.variables,
        campaign=data.campaign,
        status=RunStatus.ACTIVE,
        started_at=now,
    )
    steps = [
        ChainStep(
            id=uuid7(),
            workspace_id=workspace_id,
            run_id=run.id,
            position=position,
            key=step["key"],
            status=StepStatus.PENDING,
            due_at=now + durations.parse(step["after"]) if position == 0 else None,
            attempts=0,
        )
        for position, step in enumerate(chain_steps)
    ]
    return run, steps


async def require_run(
    session: AsyncSession, workspace_id: uuid.UUID, run_id: uuid.UUID, *, lock: bool = False
) -> ChainRun:
    """A run of the workspace, or 404 (the same for another workspace's)."""
    run = await repository.get_run(session, workspace_id, run_id, lock=lock)
    if run is None:
        raise NotFound("No chain run with this id.", code="chain_run_not_found")
    return run


async def show_run(session: AsyncSession, workspace_id: uuid.UUID, run: ChainRun) -> RunOut:
    """The run with each step's decision."""
    chain = await require_chain(session, workspace_id, run.chain_id)
    steps = await repository.steps_of(session, workspace_id, run.id)
    return RunOut(
        run_id=run.id,
        chain_id=chain.id,
        chain_key=chain.key,
        chain_version=chain.version,
        contact_id=run.contact_id,
        status=run.status,  # type: ignore[arg-type]  # the CHECK constraint keeps it to the Literal
        started_at=run.started_at,
        ended_at=run.ended_at,
        ended_by_event_id=run.ended_by_event_id,
        campaign=run.campaign,
        variables=run.variables,
        key=run.key,
        steps=[_step_out(s) for s in steps],
    )


def _step_out(step: ChainStep) -> StepOut:
    return StepOut(
        key=step.key,
        status=step.status,  # type: ignore[arg-type]  # the CHECK constraint keeps it to the Literal
        due_at=step.due_at,
        decided_at=step.decided_at,
        message_id=step.message_id,
        reason=step.reason,
        event_id=step.event_id,
        detail=step.detail,
    )


async def cancel_run(session: AsyncSession, workspace_id: uuid.UUID, run_id: uuid.UUID) -> ChainRun:
    """Cancel the steps not yet decided (a run already over stays as it is).

    The run is locked first; a step a runner is deciding right now is waited for (its decision stands).
    """
    run = await require_run(session, workspace_id, run_id, lock=True)
    if run.status != RunStatus.ACTIVE:
        return run
    now = utcnow()
    await repository.close_pending(session, workspace_id, run.id, StepStatus.CANCELLED, at=now, reason="cancelled")
    run.status = RunStatus.CANCELLED
    run.ended_at = now
    return run


def channels_of(step: Mapping[str, Any]) -> list[Channel]:
    """A stored step's route."""
    return [Channel(c) for c in step["route"]]


def due_after(step: Mapping[str, Any], *, started_at: datetime, previous_at: datetime) -> datetime:
    """When a step is due: its delay after the run's start, or after the step before (``after_previous``)."""
    base = previous_at if step.get("after_previous") else started_at
    return max(base + durations.parse(step["after"]), previous_at)


async def chain_report(session: AsyncSession, workspace_id: uuid.UUID, chain_id: uuid.UUID) -> ChainReport:
    """Per step of the chain version: how many runs reached it, sent, skipped (by reason), converted."""
    chain = await require_chain(session, workspace_id, chain_id)
    rows = await repository.step_counts(session, workspace_id, chain.id)
    steps = [
        StepReport(key=s["key"], reached=0, sent=0, skipped={}, ended=0, cancelled=0, waiting=0, converted=0)
        for s in chain.steps
    ]
    for position, status, reason, n, converted in rows:
        step = steps[position]
        if status == StepStatus.SENT:
            step.sent += n
            step.converted += converted
        elif status == StepStatus.SKIPPED:
            step.skipped[reason or "unknown"] = step.skipped.get(reason or "unknown", 0) + n
        elif status == StepStatus.ENDED:
            step.ended += n
        elif status == StepStatus.CANCELLED:
            step.cancelled += n
        else:
            step.waiting += n
    for step in steps:
        step.reached = step.sent + sum(step.skipped.values())
    runs = {status.value: 0 for status in RunStatus} | await repository.run_counts(session, workspace_id, chain.id)
    return ChainReport(chain_id=chain.id, key=chain.key, version=chain.version, runs=runs, steps=steps)
