"""API types of chains and their runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from app.chains.conditions import Signal
from app.domain.model import Channel
from app.lib.text import SINGLE_LINE
from app.messages.schemas import Content

StepKey = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="Unique within the chain.")]


class Term(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One test of an earlier step's outcome: give exactly one of ``has`` and ``has_not``."""

    step: StepKey
    has: Signal | None = None
    has_not: Signal | None = None


class When(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """Every (``all``) or at least one (``any``) of the terms holds; give exactly one of the two."""

    all: Annotated[list[Term], msgspec.Meta(min_length=1, max_length=20)] | None = None
    any: Annotated[list[Term], msgspec.Meta(min_length=1, max_length=20)] | None = None


class StepIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One step: a message on ``route`` (as ``POST /v1/messages``), ``after`` a delay, if ``when`` holds."""

    key: StepKey
    route: Annotated[list[Channel], msgspec.Meta(min_length=1, max_length=6)]
    strategy: Literal["first_eligible", "all_eligible"] = "first_eligible"
    content: Content
    after: Annotated[
        str,
        msgspec.Meta(
            min_length=2,
            max_length=40,
            description="ISO 8601 duration (weeks, days, hours, minutes, seconds; at most 365 days), e.g. `PT2H`, "
            "`P3D`, `PT0S`: since the run started, or since the step before was decided with `after_previous`.",
        ),
    ] = "PT0S"
    after_previous: bool = False
    when: When | None = None
    on_unknown: Annotated[
        Literal["skip", "send"],
        msgspec.Meta(description="What the step does when `when` cannot be known (e.g. opens are not tracked)."),
    ] = "skip"


class ChainIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A chain; the same ``key`` again makes a new version (runs keep the version they started with)."""

    key: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
    purpose: Annotated[str, msgspec.Meta(min_length=1, max_length=63)]
    steps: Annotated[list[StepIn], msgspec.Meta(min_length=1, max_length=20)]
    stop_on_opt_out: Annotated[
        Literal["purpose", "channel"],
        msgspec.Meta(
            description="`purpose`: an opt-out or objection on the purpose on any channel ends the run; "
            "`channel`: it ends only what would go out on that channel."
        ),
    ] = "purpose"


class ChainOut(msgspec.Struct, kw_only=True):
    """One version of a chain."""

    id: uuid.UUID
    key: str
    version: int
    purpose: str
    steps: list[StepIn]
    stop_on_opt_out: str
    created_at: datetime


VariableName = Annotated[str, msgspec.Meta(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")]
VariableValue = Annotated[str, msgspec.Meta(max_length=1000), SINGLE_LINE]


class RunIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Start a run of the chain for a contact. ``{{name}}`` in the steps' content is replaced by ``variables``."""

    contact: Annotated[str, msgspec.Meta(min_length=1, max_length=200, description="Contact id or external_id.")]
    variables: Annotated[dict[VariableName, VariableValue], msgspec.Meta(max_length=50)] | None = None
    campaign: Annotated[str, msgspec.Meta(min_length=1, max_length=100), SINGLE_LINE] | None = None


class RunStarted(msgspec.Struct, kw_only=True):
    """The run was accepted; its steps are decided by the chain runner when they are due."""

    run_id: uuid.UUID


#: Runs one batch may start (Knock's workflow trigger takes up to 1,000 recipients per call).
MAX_BATCH = 1000

RunKey = Annotated[
    str,
    msgspec.Meta(
        # (?![\s\S]), not $: Python's $ also matches before a final newline, which the database's CHECK refuses
        pattern=r"^[\x21-\x7e]{1,255}(?![\s\S])",
        description="1 to 255 visible ASCII characters, as an `Idempotency-Key`: one run of this chain version per "
        "key, however often the batch is sent again.",
    ),
]


class RunItemIn(RunIn, forbid_unknown_fields=True, kw_only=True):
    """One run of a batch: what ``POST /v1/chains/{id}/runs`` takes, and an optional ``key``."""

    key: RunKey | None = None


class RunsBatchIn(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Runs to start, each checked on its own (an item that would be refused is answered in its entry)."""

    runs: Annotated[
        list[dict[str, Any]],
        msgspec.Meta(
            min_length=1,
            max_length=MAX_BATCH,
            description="Each item an object as `POST /v1/chains/{id}/runs` takes it (`RunIn`: `contact`, "
            "`variables?`, `campaign?`) with an optional `key` (1 to 255 visible ASCII characters). An item that is "
            "not an object refuses the whole body; an object the single call would refuse is answered in its entry.",
        ),
    ]


class ItemError(msgspec.Struct, kw_only=True):
    """Why an item started no run: the ``code`` and ``detail`` the single call's problem would carry."""

    code: str
    detail: str


class RunsBatchItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One item's outcome, by its ``index`` in the request.

    The ``run_id`` started (or named by the item's ``key``), or the ``error`` that refused it.
    """

    index: int
    run_id: uuid.UUID | None = None
    error: ItemError | None = None


class RunsBatchOut(msgspec.Struct, kw_only=True):
    """Every item's outcome, in request order."""

    runs: list[RunsBatchItem]


class StepOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One step's decision.

    ``pending``: ``due_at`` (empty while it waits for the step before it); ``sent``: the ``message_id``;
    ``skipped``: the ``reason`` (``condition_not_met``, ``outcome_unknown``, ``no_eligible_channel``,
    ``content_invalid``, ``step_failed``); ``cancelled``; ``ended``: the ledger ``event_id`` that ended it.
    ``detail`` holds how the condition came out, term by term.
    """

    key: str
    status: Literal["pending", "sent", "skipped", "cancelled", "ended"]
    due_at: datetime | None = None
    decided_at: datetime | None = None
    message_id: uuid.UUID | None = None
    reason: str | None = None
    event_id: uuid.UUID | None = None
    detail: dict[str, Any] | None = None


class RunOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A run and each step's decision."""

    run_id: uuid.UUID
    chain_id: uuid.UUID
    chain_key: str
    chain_version: int
    contact_id: uuid.UUID
    status: Literal["active", "completed", "cancelled", "ended"]
    started_at: datetime
    steps: list[StepOut]
    ended_at: datetime | None = None
    ended_by_event_id: uuid.UUID | None = None
    campaign: str | None = None
    variables: dict[str, str] | None = None
    key: str | None = None
    """The item's ``key`` of a run started in a batch."""


class StepReport(msgspec.Struct, kw_only=True):
    """One step over all the chain version's runs.

    ``reached``: decided (``sent`` + skipped); ``skipped`` by reason; ``ended``: the run had ended (an opt-out)
    when the step came; ``waiting``: still pending; ``converted``: sent steps whose message the shop reported
    converted.
    """

    key: str
    reached: int
    sent: int
    skipped: dict[str, int]
    ended: int
    cancelled: int
    waiting: int
    converted: int


class ChainReport(msgspec.Struct, kw_only=True):
    """How a chain version's runs went, step by step."""

    chain_id: uuid.UUID
    key: str
    version: int
    runs: dict[str, int]
    """Runs by status (``active``, ``completed``, ``cancelled``, ``ended``)."""
    steps: list[StepReport]
