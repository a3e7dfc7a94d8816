"""Applying consent events: check the transition → append to the chain → update the projection, one transaction.

Every entry point (API, webhooks, pages, imports, provider feedback) records consent changes through
:func:`apply_changes`, or for a large batch through :func:`record_batch` (the same rules and locks, written
set-based: the imports); no other code writes consents or events.

Locking order, which keeps concurrent writers free of deadlocks: consent rows first, in a fixed order
(contact point id, purpose id), then the workspace's chain head, held until commit. :func:`apply_changes` takes no
chain head: its events are inserted unsealed and chained after commit (:mod:`app.ledger.sealer`); the batch writers
(:func:`record_batch`, :func:`record_notes`) still append under the head, sealing what waits first.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.chain import (
    GENESIS,
    ChainFields,
    canonical_json,
    event_hash,
    new_personal,
    personal_digest,
    salts,
)
from app.domain.model import (
    VERIFYING_TRIGGERS,
    WITHDRAWN_STATES,
    ActorType,
    Channel,
    LegalBasis,
    State,
    Trigger,
    VerifiedVia,
)
from app.domain.transitions import Rule, TransitionNotAllowed, decide, decide_import, decide_merge
from app.ledger import repository, sealer
from app.ledger.models import Consent, Contact, ContactPoint
from app.lib.errors import Conflict, InvalidInput, NotFound, contact_merged
from app.lib.ids import uuid7, uuid7s
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.purposes.models import Notice


@dataclass(frozen=True, slots=True)
class Actor:
    """Who causes the events: an API key, the person, a provider, the system."""

    type: ActorType
    id: str | None = None


class PointRef(Protocol):
    """What the ledger needs of an address: a loaded row, or one a batch has just inserted."""

    @property
    def id(self) -> uuid.UUID: ...  # noqa: D102  # a protocol's attributes

    @property
    def contact_id(self) -> uuid.UUID: ...  # noqa: D102

    @property
    def channel(self) -> str: ...  # noqa: D102


@dataclass(frozen=True, slots=True)
class Change:
    """One requested consent event. ``target`` is set for imports and merges only."""

    contact_point: PointRef
    purpose_id: uuid.UUID | None
    trigger: Trigger
    evidence: Mapping[str, Any] = field(default_factory=dict)
    notice: Notice | None = None
    occurred_at: datetime | None = None
    target: State | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """What happened to one change. ``event_id`` is ``None`` when it was skipped (``skipped`` says why)."""

    consent_id: uuid.UUID | None
    """``None`` for a note (:func:`record_notes`), which moves no consent."""
    contact_point_id: uuid.UUID
    channel: Channel
    purpose_id: uuid.UUID | None
    from_state: State
    to_state: State
    event_id: uuid.UUID | None
    skipped: str | None = None


async def apply_changes(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    changes: Sequence[Change],
    actor: Actor,
    *,
    skip_not_allowed: bool = False,
    unless: Collection[str] = (),
) -> list[Applied]:
    """Record ``changes`` in the caller's transaction; results come back in the order of ``changes``.

    A change the tables do not allow raises :class:`TransitionNotAllowed` (nothing is written, as the caller's
    transaction is rolled back), or with ``skip_not_allowed`` (webhooks, provider feedback) is returned as
    skipped with the reason. An import never overrides a withdrawal or objection that happened after it.
    ``unless``: a change whose consent row is in one of these states once locked is left out (not answered): a
    retried one-click unsubscribe racing its first try records nothing the second time.
    """
    return await _write(
        session,
        workspace_id,
        changes,
        actor,
        skip_not_allowed=skip_not_allowed,
        unsealed=sealer.deferred(),
        unless=unless,
    )


async def _write(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    changes: Sequence[Change],
    actor: Actor,
    *,
    skip_not_allowed: bool,
    unsealed: bool,
    unless: Collection[str] = (),
) -> list[Applied]:
    """Lock, plan, write: a few statements whatever the batch's size.

    The consent rows locked and read as tuples in one statement, every event in one ``INSERT … SELECT FROM
    unnest``, the projections moved with one ``UPDATE``.

    ``unsealed``: the events are left to the sealer (:mod:`app.ledger.sealer`) and the chain head is not touched,
    so that changes of one workspace commit together; otherwise they are chained here, under the head's lock, after
    what waits. Consents the session has loaded are given what was locked and written (as ``populate_existing``).
    """
    if not changes:
        return []
    for change in changes:
        _check_notice(change)
    driver = await repository.transaction_driver(session) if unsealed and _on_driver.get() else None
    wanted = _lock_order(changes)
    if driver is not None:
        consents = await repository.lock_consent_rows_on_driver(driver, workspace_id, wanted)
    else:
        consents = await repository.lock_consent_rows(session, workspace_id, wanted)
    if unless:  # decided on the rows as locked: a writer that committed while this one waited is seen
        changes = [change for change in changes if consents[_key(change)].state not in unless]
        if not changes:
            return []
    return await _record(
        session, workspace_id, changes, consents, actor, skip_not_allowed, driver=driver, unsealed=unsealed
    )


async def record_locked(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    changes: Sequence[Change],
    consents: Mapping[tuple[uuid.UUID, uuid.UUID | None], repository.ConsentRow],
    actor: Actor,
    *,
    driver: Any,
) -> list[Applied]:
    """:func:`apply_changes` with ``skip_not_allowed`` of changes whose consent rows the caller has locked already.

    ``consents`` by (contact point id, purpose id); written on the ``driver`` connection of the session's
    transaction, where a sealer runs (the events are left to it): the single withdrawal's path (``withdraw_point``).
    """
    if not changes:
        return []
    for change in changes:
        _check_notice(change)
    return await _record(session, workspace_id, changes, consents, actor, True, driver=driver)  # noqa: FBT003


async def _record(  # noqa: PLR0917  # the one tail of _write and record_locked
    session: AsyncSession,
    workspace_id: uuid.UUID,
    changes: Sequence[Change],
    consents: Mapping[tuple[uuid.UUID, uuid.UUID | None], Consent | repository.ConsentRow],
    actor: Actor,
    skip_not_allowed: bool,  # noqa: FBT001
    *,
    driver: Any = None,
    unsealed: bool = True,
) -> list[Applied]:
    """Plan and write changes whose consent rows are locked; with ``driver`` their writes in one statement on it."""
    repository.refresh_loaded(
        session, ((row.id, {name: getattr(row, name) for name in repository.PROJECTION}) for row in consents.values())
    )
    now = utcnow()
    plan = _plan(changes, consents, now, skip_not_allowed=skip_not_allowed)
    event_ids: dict[int, uuid.UUID] = {}
    if any(step.rule is not None for step in plan):
        head = None if unsealed else await sealer.lock_head(session, workspace_id)
        chained = _chain(workspace_id, changes, consents, plan, actor, now, head)
        for event, personal in zip(chained.events, chained.personal_texts, strict=True):
            event["personal"] = personal.decode()
        latest = [_projection(row) for row in _latest(chained)]
        if driver is not None and head is None:
            await repository.write_unsealed_on_driver(
                driver,
                workspace_id,
                chained.events,
                latest,
                actor_type=actor.type.value,
                actor_id=actor.id,
                recorded_at=now,
            )
        else:
            await repository.insert_events(
                session, workspace_id, chained.events, actor_type=actor.type.value, actor_id=actor.id, recorded_at=now
            )
            await repository.update_projections(session, workspace_id, latest)
        if head is None:
            sealer.note_unsealed(session, workspace_id)
        repository.refresh_loaded(session, ((row["id"], {k: v for k, v in row.items() if k != "id"}) for row in latest))
        event_ids = chained.event_ids
    await _verify(session, changes, plan, event_ids, now)
    return _applied(changes, consents, plan, event_ids)


#: Whether a single change where a sealer runs goes on the driver connection (:func:`on_session`).
_on_driver: ContextVar[bool] = ContextVar("ledger_on_driver", default=True)


def changes_on_driver() -> bool:
    """Whether single changes may go on the driver connection here (not within :func:`on_session`)."""
    return _on_driver.get()


def single_change_on_driver() -> bool:
    """Whether a single change goes on the driver connection here: a sealer runs, and not within :func:`on_session`.

    What ``withdraw_point`` decides by; a caller that folds its own statements around one (a STOP webhook) too.
    """
    return sealer.deferred() and _on_driver.get()


@contextmanager
def on_session() -> Iterator[None]:
    """Within: consent changes go through the session's statements even where a sealer runs.

    The way before the driver path, kept for where no transaction is begun; the tests compare the two ledgers.
    """
    token = _on_driver.set(False)
    try:
        yield
    finally:
        _on_driver.reset(token)


def _applied(
    changes: Sequence[Change],
    consents: Mapping[tuple[uuid.UUID, uuid.UUID | None], Consent | repository.ConsentRow],
    plan: Sequence[_Step],
    event_ids: Mapping[int, uuid.UUID],
) -> list[Applied]:
    return [
        Applied(
            consent_id=consents[_key(changes[step.index])].id,
            contact_point_id=changes[step.index].contact_point.id,
            channel=Channel(changes[step.index].contact_point.channel),
            purpose_id=changes[step.index].purpose_id,
            from_state=step.current,
            to_state=step.rule.target if step.rule else step.current,
            event_id=event_ids.get(step.index),
            skipped=step.skipped,
        )
        for step in plan
    ]


@dataclass(slots=True)  # not frozen: one per change, only read
class _Step:
    index: int
    current: State
    rule: Rule | None
    skipped: str | None


def _key(change: Change) -> tuple[uuid.UUID, uuid.UUID | None]:
    return (change.contact_point.id, change.purpose_id)


def _lock_order(changes: Sequence[Change]) -> list[repository.ConsentKey]:
    """The consent rows ``changes`` touch, once each, in the one order every writer locks them in."""
    wanted: dict[tuple[uuid.UUID, uuid.UUID | None], repository.ConsentKey] = {}
    # by (point id, purpose id) as text, a missing purpose first; compared as integers, which orders them the same
    # (fixed-width lower-case hex, the hyphens in the same places) without making two strings per change
    for change in sorted(changes, key=lambda c: (c.contact_point.id.int, c.purpose_id.int if c.purpose_id else -1)):
        point = change.contact_point
        wanted.setdefault(
            _key(change), repository.ConsentKey(point.id, change.purpose_id, point.contact_id, point.channel)
        )
    return list(wanted.values())


def _plan(
    changes: Sequence[Change],
    consents: Mapping[tuple[uuid.UUID, uuid.UUID | None], Consent | repository.ConsentRow],
    now: datetime,
    *,
    skip_not_allowed: bool,
) -> list[_Step]:
    """Decide every change against the state the previous changes of the batch leave (nothing is written)."""
    state_of = {key: State(consent.state) for key, consent in consents.items()}
    since_of = {key: consent.since for key, consent in consents.items()}
    plan: list[_Step] = []
    for index, change in enumerate(changes):
        key = _key(change)
        current = state_of[key]
        occurred = change.occurred_at or now
        rule, skipped = _decide(change, current, since_of[key], occurred, skip_not_allowed=skip_not_allowed)
        if rule is not None:
            state_of[key], since_of[key] = rule.target, occurred
        plan.append(_Step(index, current, rule, skipped))
    return plan


def _decide(
    change: Change, current: State, since: datetime | None, occurred: datetime, *, skip_not_allowed: bool
) -> tuple[Rule | None, str | None]:
    channel = Channel(change.contact_point.channel)
    try:
        if change.trigger is Trigger.MERGED:
            if change.target is None:
                raise InvalidInput("A merge names the state it keeps.", code="merge_target_missing")
            return decide_merge(channel, current, change.target), None
        if change.trigger is not Trigger.IMPORT:
            return decide(channel, current, change.trigger), None
        if change.target is None:
            raise InvalidInput("An import names the state it records.", code="import_target_missing")
        rule = decide_import(channel, change.target)
    except TransitionNotAllowed:
        if not skip_not_allowed:
            raise
        return None, f"'{change.trigger}' is not allowed in state '{current}'"
    if since is not None and occurred <= since:
        if current in WITHDRAWN_STATES:
            return None, "a later withdrawal or objection stands"
        if change.trigger is Trigger.IMPORT:
            # the ledger already knows this consent from this time or later: importing the same line again, or
            # an older one, records nothing (imports are idempotent)
            return None, "the ledger holds this consent from this time or later"
    return rule, None


@dataclass(slots=True)
class _Chained:
    """Events chained in one pass, with the projections they move the consents to."""

    events: list[dict[str, Any]] = field(default_factory=list)
    """Each event's own columns (:data:`repository.EVENT_COLUMNS`, ``personal`` as a mapping)."""
    common: dict[str, Any] = field(default_factory=dict)
    """The columns all events of the batch share: actor and ``recorded_at``."""
    projections: list[dict[str, Any]] = field(default_factory=list)
    """Per consent moved: ``index`` (of its change), ``id`` and the projection's columns."""
    event_ids: dict[int, uuid.UUID] = field(default_factory=dict)
    personal_texts: list[bytes] = field(default_factory=list)
    """Each event's personal part as canonical JSON (what its ``personal_digest`` is the SHA-256 of)."""


def _chain(  # noqa: PLR0917  # one pass over what apply_changes has at hand
    workspace_id: uuid.UUID,
    changes: Sequence[Change],
    consents: Mapping[tuple[uuid.UUID, uuid.UUID | None], Consent | repository.ConsentRow],
    plan: Sequence[_Step],
    actor: Actor,
    now: datetime,
    head: tuple[int, bytes] | None,
) -> _Chained:
    """Chain the planned events after ``head`` (last seq, last hash): one pass, no statement.

    Without ``head`` the events are left unsealed (``seq``, ``prev_hash``, ``hash`` None): the sealer chains them.
    """
    last_seq, last_hash = head or (0, GENESIS)
    chained = _Chained(common={"actor_type": actor.type.value, "actor_id": actor.id, "recorded_at": now})
    moved: dict[uuid.UUID, dict[str, Any]] = {}
    count = sum(1 for step in plan if step.rule is not None)
    ids, salted = iter(uuid7s(count)), iter(salts(count))  # the random bits of all events read at once
    for step in plan:
        if step.rule is None:
            continue
        change = changes[step.index]
        consent = consents[_key(change)]
        earlier = moved.get(consent.id)
        personal = new_personal(change.evidence, next(salted))
        personal_text = canonical_json(personal)  # once: the digest is of this text, a batch stores it as it is
        # The notice a consent rests on: the one this change shows, else the one its request showed (a
        # confirmation or withdrawal refers to it); a new request starts afresh.
        notice_id = change.notice.id if change.notice else None
        if notice_id is None and step.rule.target is not State.PENDING:
            notice_id = earlier["notice_id"] if earlier else consent.notice_id
        fields = ChainFields(
            id=next(ids),
            workspace_id=workspace_id,
            seq=last_seq + 1,
            contact_id=change.contact_point.contact_id,
            contact_point_id=change.contact_point.id,
            purpose_id=change.purpose_id,
            channel=change.contact_point.channel,
            trigger=change.trigger.value,
            from_state=step.current.value,
            to_state=step.rule.target.value,
            legal_basis=step.rule.basis.value if step.rule.basis else None,
            notice_id=notice_id,
            actor_type=actor.type.value,
            actor_id=actor.id,
            occurred_at=change.occurred_at or now,
            recorded_at=now,
            personal_digest=hashlib.sha256(personal_text).digest(),
        )
        digest = event_hash(fields, last_hash) if head is not None else None
        chained.personal_texts.append(personal_text)
        chained.events.append(
            {
                "id": fields.id,
                "seq": fields.seq if digest is not None else None,
                "contact_id": fields.contact_id,
                "contact_point_id": fields.contact_point_id,
                "purpose_id": fields.purpose_id,
                "channel": fields.channel,
                "trigger": fields.trigger,
                "from_state": fields.from_state,
                "to_state": fields.to_state,
                "legal_basis": fields.legal_basis,
                "notice_id": fields.notice_id,
                "personal": personal,
                "personal_digest": fields.personal_digest,
                "occurred_at": fields.occurred_at,
                "prev_hash": last_hash if digest is not None else None,
                "hash": digest,
            }
        )
        if digest is not None:
            last_seq, last_hash = fields.seq, digest
        chained.event_ids[step.index] = fields.id
        projection = {
            "index": step.index,
            "id": consent.id,
            "state": step.rule.target.value,
            "legal_basis": fields.legal_basis,
            "notice_id": notice_id,
            "since": fields.occurred_at,
            "last_event_id": fields.id,
            "version": (earlier["version"] if earlier else consent.version) + 1,
        }
        moved[consent.id] = projection
        chained.projections.append(projection)
    return chained


def _latest(chained: _Chained) -> list[dict[str, Any]]:
    """The last projection of each consent the batch moved (one moved twice keeps its second)."""
    return list({row["id"]: row for row in chained.projections}.values())


def _projection(row: Mapping[str, Any]) -> dict[str, Any]:
    """A consent's projection columns (and id) of a :class:`_Chained` projection."""
    return {name: value for name, value in row.items() if name != "index"}


async def lock_consents_of(session: AsyncSession, workspace_id: uuid.UUID, changes: Sequence[Change]) -> None:
    """Lock (creating where missing) every consent row ``changes`` touch, in the ledger's one order.

    For a caller that records ``changes`` with several :func:`record_batch` calls in one transaction: the first
    call locks the chain head, so the later calls' consent rows must be locked before it (then they are held
    already). In statements of :data:`_LOCK_AHEAD` rows.
    """
    keys = _lock_order(changes)
    for start in range(0, len(keys), _LOCK_AHEAD):
        await repository.lock_consent_rows(session, workspace_id, keys[start : start + _LOCK_AHEAD])


#: Consent rows per statement of :func:`lock_consents_of`.
_LOCK_AHEAD = 10_000


async def record_batch(
    session: AsyncSession, workspace_id: uuid.UUID, changes: Sequence[Change], actor: Actor
) -> list[Applied]:
    """:func:`apply_changes` with ``skip_not_allowed`` for a large batch (the consent import's).

    The same statements; the events are always chained in the batch's transaction, under the head (a batch of
    thousands is chained at once; leaving it to the sealer would only move that work).
    """
    return await _write(session, workspace_id, changes, actor, skip_not_allowed=True, unsealed=False)


@dataclass(frozen=True, slots=True)
class Note:
    """An event that records what the person asked for without moving a consent (a pause and its end)."""

    contact_point: ContactPoint
    trigger: Trigger
    evidence: Mapping[str, Any] = field(default_factory=dict)
    legal_basis: LegalBasis | None = None
    """The basis the note is evidence of (a purchase: ``uwg_7_3``); it moves no consent all the same."""
    occurred_at: datetime | None = None


async def record_notes(
    session: AsyncSession, workspace_id: uuid.UUID, notes: Sequence[Note], actor: Actor
) -> list[uuid.UUID]:
    """Chain one event per note that leaves every consent as it is; answers their ids in the order of ``notes``.

    The event is the channel's (``purpose_id`` NULL) with ``from_state = to_state`` = that consent's state (``none``
    where there is none) and the note's legal basis (if any); the projection is not moved, so a consent's ``since``
    and evidence stay those of the change that made it. Only the chain head is locked (the last lock of every writer).
    """
    if not notes:
        return []
    states: dict[uuid.UUID, State] = {}
    for contact_id in {note.contact_point.contact_id for note in notes}:
        for consent in await repository.consents_of(session, contact_id):
            if consent.purpose_id is None:
                states[consent.contact_point_id] = State(consent.state)
    now = utcnow()
    last_seq, last_hash = await sealer.lock_head(session, workspace_id)
    rows: list[dict[str, Any]] = []
    for note in notes:
        state = states.get(note.contact_point.id, State.NONE).value
        personal = new_personal(note.evidence)
        fields = ChainFields(
            id=uuid7(),
            workspace_id=workspace_id,
            seq=last_seq + 1,
            contact_id=note.contact_point.contact_id,
            contact_point_id=note.contact_point.id,
            purpose_id=None,
            channel=note.contact_point.channel,
            trigger=note.trigger.value,
            from_state=state,
            to_state=state,
            legal_basis=note.legal_basis.value if note.legal_basis else None,
            notice_id=None,
            actor_type=actor.type.value,
            actor_id=actor.id,
            occurred_at=note.occurred_at or now,
            recorded_at=now,
            personal_digest=personal_digest(personal),
        )
        digest = event_hash(fields, last_hash)
        rows.append({**asdict(fields), "personal": personal, "prev_hash": last_hash, "hash": digest})
        last_seq, last_hash = fields.seq, digest
    await repository.append_events(session, rows, workspace_id)
    return [row["id"] for row in rows]


async def _verify(
    session: AsyncSession,
    changes: Sequence[Change],
    plan: Sequence[_Step],
    event_ids: Mapping[int, uuid.UUID],
    now: datetime,
) -> None:
    """Mark the addresses the batch proved to be their contacts' (:data:`VERIFYING_TRIGGERS`) as verified.

    A confirmation, start word or permission proves the address when it is recorded (the ledger then holds the
    proof, which is what migration 0019 backfilled from). An import verifies even when the ledger already knew
    a later state and recorded nothing: the tenant's records still name the address for the contact.
    """
    verified: dict[uuid.UUID, VerifiedVia] = {}
    for step in plan:
        change = changes[step.index]
        via = VERIFYING_TRIGGERS.get(change.trigger)
        if via is not None and (step.index in event_ids or change.trigger is Trigger.IMPORT):
            verified.setdefault(change.contact_point.id, via)
    for via in set(verified.values()):
        await repository.mark_verified_many(session, [p for p, v in verified.items() if v is via], via, now)


def _check_notice(change: Change) -> None:
    notice = change.notice
    if notice is None:
        return
    if change.purpose_id is None or notice.purpose_id != change.purpose_id:
        raise InvalidInput("The notice belongs to another purpose.", code="notice_mismatch")
    if change.contact_point.channel not in notice.channels:
        raise InvalidInput(
            f"The notice does not cover the {change.contact_point.channel} channel.", code="notice_mismatch"
        )


async def add_point(
    session: AsyncSession,
    keys: Keys,
    workspace_id: uuid.UUID,
    *,
    contact_id: uuid.UUID,
    channel: str,
    value: str,
    details: dict[str, Any] | None = None,
    verified: VerifiedVia | None = None,
    attached_by_form: bool = False,
) -> ContactPoint:
    """Create (or find) a contact point with the keys it is matched against suppressions by.

    ``verified``: how the caller knows the address is the contact's (a key that may write consents: ``api``);
    ``None`` leaves a new address unverified (a form's address, until its own proof comes). An existing
    address found by its value is marked verified too, as it was named for its contact again.
    ``attached_by_form``: a ``signup`` key adds this new address to a contact that existed before; its own proof
    will not verify it (:func:`app.ledger.repository.mark_verified`).
    """
    details = details or {}
    point = await repository.add_contact_point(
        session,
        workspace_id,
        contact_id=contact_id,
        channel=channel,
        value=value,
        details=details,
        suppression_keys=keys.point_keys(channel, value, details),
        verified=verified,
        attached_by_form=attached_by_form,
    )
    if verified is not None and point.verified_at is None and point.contact_id == contact_id:
        await repository.mark_verified(session, point.id, verified, utcnow())
        point = await repository.reload_point(session, point.id)
    return point


async def require_contact(session: AsyncSession, workspace_id: uuid.UUID, ref: str) -> Contact:
    """The contact named by id or external id, or 404 (the same for another workspace's contact)."""
    contact = await repository.find_contact(session, workspace_id, ref)
    if contact is None:
        raise NotFound("No contact with this id or external id.", code="contact_not_found")
    refuse_merged(contact)
    return contact


async def require_contact_on_driver(connection: Any, workspace_id: uuid.UUID, ref: str) -> uuid.UUID:
    """:func:`require_contact` on a raw asyncpg ``connection`` (a hot path): the contact's id, or the same errors."""
    found = await repository.find_contact_on_driver(connection, workspace_id, ref)
    if found is None:
        raise NotFound("No contact with this id or external id.", code="contact_not_found")
    contact_id, merged_into = found
    if merged_into is not None:
        raise contact_merged(merged_into)
    return contact_id


async def contacts_on_driver(
    connection: Any, workspace_id: uuid.UUID, refs: Sequence[str]
) -> list[tuple[uuid.UUID | None, NotFound | Conflict | None]]:
    """:func:`require_contact_on_driver` for many references in one statement, the errors answered, not raised.

    Per reference, in order: the contact's id (None when not found) and the error the single call would
    raise for it (404 ``contact_not_found``, 409 ``contact_merged``), or None. The contacts found are locked ``FOR
    KEY SHARE`` until the caller's transaction ends (in id order, as merges lock theirs).
    """
    answers: list[tuple[uuid.UUID | None, NotFound | Conflict | None]] = []
    for found in await repository.find_contacts_on_driver(connection, workspace_id, refs):
        if found is None:
            answers.append((None, NotFound("No contact with this id or external id.", code="contact_not_found")))
        else:
            contact_id, merged_into = found
            answers.append((contact_id, None if merged_into is None else contact_merged(merged_into)))
    return answers


def refuse_merged(contact: Contact) -> None:
    """409 ``contact_merged`` naming the survivor, for a contact merged into another."""
    if contact.merged_into is not None:
        raise contact_merged(contact.merged_into)
