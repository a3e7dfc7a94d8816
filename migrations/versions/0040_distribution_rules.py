"""Citus' multi-tenant rules (issue 21, item 6; docs/scaling.md): ``workspace_id`` in every key of a tenant table.

Past one machine the tenant tables are distributed by ``workspace_id`` and Citus enforces a primary key or unique
constraint only when it includes that column, and a foreign key between two of them only when both sides carry it
at the same position (the two rows are then on the same shard). So:

- ``message_events`` gets ``workspace_id`` (its message's), the one tenant table that had none;
- every primary key ``(id)`` becomes ``(id, workspace_id)`` (``message_tokens``: ``(token_hash, workspace_id)``):
  ``id`` first, so a look-up by id alone still reads the key's index;
- the unique constraints and indexes that lacked it get it last, under their old names (upserts name them);
  secret hashes (tokens, links, sessions) are then unique per workspace, which 256 random bits are anyway;
- every foreign key between tenant tables becomes ``(workspace_id, x_id) -> (workspace_id, id)``, with the same
  ``ON DELETE``: a row may no longer name another workspace's row;
- the two ``ON DELETE SET NULL`` keys to ``messages`` (``chain_steps.message_id``, ``repermissions.message_id``)
  are dropped: through a key that includes ``workspace_id`` it would clear that too, and Citus refuses it even with
  PostgreSQL 15's column list. A message goes only with its contact (whose runs and re-permissions the same
  erasure deletes) or with its workspace, so no row is left naming a deleted message for long;
- the webhook triggers' ``ON CONFLICT`` names the widened key of ``webhook_deliveries``.

``api_keys``, ``sender_identities``, ``operator_keys``, ``workspace_deletions`` and ``workspaces`` stay as they are:
they become reference tables (tests/integration/test_distribution_rules.py lists them with the reason).

Revision ID: 0040
Revises: 0039
Create Date: 2026-12-06 01:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0040"
down_revision: str | None = "0039"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Tables whose primary key ``(id)`` becomes ``(id, workspace_id)``.
_KEYED_BY_ID = (
    "chain_runs",
    "chain_steps",
    "chains",
    "confirmation_tokens",
    "consent_events",
    "consents",
    "console_chain_checks",
    "console_links",
    "console_sessions",
    "contact_points",
    "contacts",
    "deliveries",
    "erasure_requests",
    "erasures",
    "inbound_messages",
    "message_events",
    "messages",
    "notices",
    "preference_links",
    "provider_callbacks",
    "purchases",
    "purposes",
    "rate_limit_hits",
    "repermissions",
    "report_consent_counts",
    "report_consent_daily",
    "report_doi",
    "report_message_counts",
    "report_message_daily",
    "report_message_queue",
    "report_standing_daily",
    "suppressions",
    "webhook_deliveries",
    "webhook_subscriptions",
)

#: (table, column, referenced table, ON DELETE): the keys between tenant tables, co-located from now on.
_FOREIGN_KEYS = (
    ("chain_runs", "chain_id", "chains", "CASCADE"),
    ("chain_runs", "contact_id", "contacts", "CASCADE"),
    ("chain_steps", "run_id", "chain_runs", "CASCADE"),
    ("chains", "purpose_id", "purposes", "RESTRICT"),
    ("confirmation_tokens", "contact_point_id", "contact_points", "CASCADE"),
    ("confirmation_tokens", "notice_id", "notices", "RESTRICT"),
    ("confirmation_tokens", "purpose_id", "purposes", "CASCADE"),
    ("consents", "contact_id", "contacts", "CASCADE"),
    ("consents", "contact_point_id", "contact_points", "CASCADE"),
    ("consents", "notice_id", "notices", "RESTRICT"),
    ("consents", "purpose_id", "purposes", "RESTRICT"),
    ("contact_points", "contact_id", "contacts", "CASCADE"),
    ("contacts", "merged_into", "contacts", "CASCADE"),
    ("deliveries", "contact_point_id", "contact_points", "CASCADE"),
    ("deliveries", "message_id", "messages", "CASCADE"),
    ("message_events", "delivery_id", "deliveries", "CASCADE"),
    ("message_events", "message_id", "messages", "CASCADE"),
    ("message_tokens", "delivery_id", "deliveries", "CASCADE"),
    ("message_tokens", "message_id", "messages", "CASCADE"),
    ("messages", "contact_id", "contacts", "CASCADE"),
    ("messages", "purpose_id", "purposes", "RESTRICT"),
    ("notices", "purpose_id", "purposes", "RESTRICT"),
    ("preference_links", "contact_id", "contacts", "CASCADE"),
    ("preference_links", "contact_point_id", "contact_points", "CASCADE"),
    ("purchases", "contact_point_id", "contact_points", "CASCADE"),
    ("repermissions", "consent_id", "consents", "CASCADE"),
    ("repermissions", "contact_point_id", "contact_points", "CASCADE"),
    ("repermissions", "purpose_id", "purposes", "CASCADE"),
    ("report_message_queue", "event_id", "message_events", "CASCADE"),
    ("suppressions", "purpose_id", "purposes", "CASCADE"),
    ("webhook_deliveries", "subscription_id", "webhook_subscriptions", "CASCADE"),
)

#: The keys to messages that set NULL: dropped (see the docstring), restored by the downgrade.
_SET_NULL_KEYS = (("chain_steps", "message_id"), ("repermissions", "message_id"))

#: (table, constraint, columns before, NULLS NOT DISTINCT): unique constraints widened by ``workspace_id``.
_UNIQUE = (
    ("chain_steps", "uq_chain_steps_run_id_position", 'run_id, "position"', False),
    ("confirmation_tokens", "uq_confirmation_tokens_token_hash", "token_hash", False),
    ("consents", "uq_consents_contact_point_id_purpose_id", "contact_point_id, purpose_id", True),
    ("console_links", "uq_console_links_token_hash", "token_hash", False),
    ("console_sessions", "uq_console_sessions_id_hash", "id_hash", False),
    ("notices", "uq_notices_purpose_id_locale_version", "purpose_id, locale, version", False),
    ("preference_links", "uq_preference_links_token_hash", "token_hash", False),
    ("repermissions", "uq_repermissions_consent_id_period_since", "consent_id, period_since", False),
    ("repermissions", "uq_repermissions_token_hash", "token_hash", False),
    ("webhook_deliveries", "uq_webhook_deliveries_subscription_id_event_id", "subscription_id, event_id", False),
)

_SIGNALS = "status IN ('opened', 'clicked', 'converted')"
_SCANNED = "coalesce(detail ? 'scanner_signals', false)"
#: (index, predicate): one engagement signal per message, a person's apart from a scanner's (migration 0039).
_SIGNAL_INDEXES = (
    ("uq_message_events_signal", f"{_SIGNALS} AND NOT {_SCANNED}"),
    ("uq_message_events_scanner_signal", f"{_SIGNALS} AND {_SCANNED}"),
)


def _webhook_functions(conflict: str) -> tuple[str, str]:
    """The two webhook-queueing trigger functions of migrations 0013 and 0014, with ``ON CONFLICT (conflict)``."""
    messages = """
        CREATE OR REPLACE FUNCTION message_events_queue_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM webhook_subscriptions WHERE 'message.status' = ANY(events)) THEN
                RETURN NULL;  -- the common case costs one look at a small table
            END IF;
            INSERT INTO webhook_deliveries (id, workspace_id, subscription_id, event_id, event_type, payload)
            SELECT gen_random_uuid(), m.workspace_id, s.id, a.id, 'message.status',
                   jsonb_build_object(
                       'id', a.id, 'type', 'message.status', 'created_at', a.at,
                       'data', jsonb_build_object(
                           'message_id', a.message_id, 'delivery_id', a.delivery_id, 'contact_id', m.contact_id,
                           'external_id', c.external_id, 'purpose', p.key, 'channel', a.channel,
                           'status', a.status, 'provider_message_id', a.provider_message_id, 'error', a.error,
                           'at', a.at))
              FROM added a
              JOIN messages m ON m.id = a.message_id
              JOIN webhook_subscriptions s ON s.workspace_id = m.workspace_id AND 'message.status' = ANY(s.events)
              LEFT JOIN contacts c ON c.id = m.contact_id
              LEFT JOIN purposes p ON p.id = m.purpose_id
            ON CONFLICT (__KEY__) DO NOTHING;
            RETURN NULL;
        END
        $$
        """
    consents = """
        CREATE OR REPLACE FUNCTION consent_events_queue_webhooks() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM webhook_subscriptions WHERE 'consent.changed' = ANY(events)) THEN
                RETURN NULL;  -- the common case costs one look at a small table
            END IF;
            INSERT INTO webhook_deliveries (id, workspace_id, subscription_id, event_id, event_type, payload)
            SELECT gen_random_uuid(), e.workspace_id, s.id, e.id, 'consent.changed',
                   jsonb_build_object(
                       'id', e.id, 'type', 'consent.changed', 'created_at', e.recorded_at,
                       'data', jsonb_build_object(
                           'seq', e.seq, 'contact_id', e.contact_id, 'external_id', c.external_id,
                           'contact_point_id', e.contact_point_id, 'channel', e.channel, 'purpose', p.key,
                           'trigger', e.trigger, 'from_state', e.from_state, 'to_state', e.to_state,
                           'legal_basis', e.legal_basis, 'occurred_at', e.occurred_at))
              FROM added e
              JOIN webhook_subscriptions s ON s.workspace_id = e.workspace_id AND 'consent.changed' = ANY(s.events)
              LEFT JOIN contacts c ON c.id = e.contact_id
              LEFT JOIN purposes p ON p.id = e.purpose_id
            ON CONFLICT (__KEY__) DO NOTHING;
            RETURN NULL;
        END
        $$
        """
    return messages.replace("__KEY__", conflict), consents.replace("__KEY__", conflict)


def upgrade() -> None:
    # the history's workspace is its message's
    op.execute("ALTER TABLE message_events ADD COLUMN workspace_id uuid")
    op.execute("UPDATE message_events e SET workspace_id = m.workspace_id FROM messages m WHERE m.id = e.message_id")
    op.execute("ALTER TABLE message_events ALTER COLUMN workspace_id SET NOT NULL")
    op.execute(
        "ALTER TABLE message_events ADD CONSTRAINT fk_message_events_workspace_id_workspaces "
        "FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE"
    )

    # the single-column keys go first: they hang on the primary keys about to change
    for table, column, referenced, _ in _FOREIGN_KEYS:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT fk_{table}_{column}_{referenced}")
    for table, column in _SET_NULL_KEYS:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT fk_{table}_{column}_messages")

    for table in _KEYED_BY_ID:
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, ADD CONSTRAINT pk_{table} PRIMARY KEY (id, workspace_id)"
        )
    op.execute(
        "ALTER TABLE message_tokens DROP CONSTRAINT pk_message_tokens, "
        "ADD CONSTRAINT pk_message_tokens PRIMARY KEY (token_hash, workspace_id)"
    )
    for table, name, columns, nulls_not_distinct in _UNIQUE:
        nulls = " NULLS NOT DISTINCT" if nulls_not_distinct else ""
        op.execute(
            f"ALTER TABLE {table} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} UNIQUE{nulls} ({columns}, workspace_id)"
        )
    for name, predicate in _SIGNAL_INDEXES:
        op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE UNIQUE INDEX {name} ON message_events (message_id, status, workspace_id) WHERE {predicate}")

    for table, column, referenced, on_delete in _FOREIGN_KEYS:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_{column}_{referenced} FOREIGN KEY (workspace_id, {column}) "
            f"REFERENCES {referenced} (workspace_id, id) ON DELETE {on_delete}"
        )
    for function in _webhook_functions("subscription_id, event_id, workspace_id"):
        op.execute(function)


def downgrade() -> None:
    for function in _webhook_functions("subscription_id, event_id"):
        op.execute(function)
    for table, column, referenced, _ in _FOREIGN_KEYS:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT fk_{table}_{column}_{referenced}")

    for name, predicate in _SIGNAL_INDEXES:
        op.execute(f"DROP INDEX {name}")
        op.execute(f"CREATE UNIQUE INDEX {name} ON message_events (message_id, status) WHERE {predicate}")
    for table, name, columns, nulls_not_distinct in _UNIQUE:
        nulls = " NULLS NOT DISTINCT" if nulls_not_distinct else ""
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} UNIQUE{nulls} ({columns})")
    op.execute(
        "ALTER TABLE message_tokens DROP CONSTRAINT pk_message_tokens, "
        "ADD CONSTRAINT pk_message_tokens PRIMARY KEY (token_hash)"
    )
    for table in _KEYED_BY_ID:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}, ADD CONSTRAINT pk_{table} PRIMARY KEY (id)")

    for table, column, referenced, on_delete in _FOREIGN_KEYS:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_{column}_{referenced} FOREIGN KEY ({column}) "
            f"REFERENCES {referenced} (id) ON DELETE {on_delete}"
        )
    for table, column in _SET_NULL_KEYS:
        # what the key would have done meanwhile
        op.execute(
            f"UPDATE {table} t SET {column} = NULL WHERE {column} IS NOT NULL "  # noqa: S608  # constants
            f"AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = t.{column})"
        )
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_{column}_messages FOREIGN KEY ({column}) "
            "REFERENCES messages (id) ON DELETE SET NULL"
        )
    op.execute("ALTER TABLE message_events DROP COLUMN workspace_id")
