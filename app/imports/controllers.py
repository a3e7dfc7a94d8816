"""``POST /v1/imports/robinson`` and ``POST /v1/imports/consents``: lists and consents, streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import ActorType
from app.imports.consents import csv_lines, import_consents, ndjson_lines
from app.imports.limits import declared_too_large, limited, too_large
from app.imports.robinson import import_robinson
from app.imports.schemas import ConsentImportReportOut, RobinsonReportOut
from app.ledger.service import Actor
from app.lib.auth import Principal, Scope
from app.lib.errors import UnsupportedMediaType
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.settings import Settings

#: Content types of NDJSON in use (none is registered).
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/jsonlines"})


def _body(request: Request[Any, Any, Any], settings: Settings) -> AsyncIterator[bytes]:
    """The body as it streams, cut at ``CONSENT_IMPORT_MAX_BYTES``; refused at once if it declares more."""
    limit = settings.import_max_bytes
    if declared_too_large(request.headers.get("content-length"), limit):
        raise too_large(limit, "Nothing was read or recorded.")
    return limited(request.stream(), limit)


class ImportController(Controller):
    """Lists streamed in (scope `consents:write`)."""

    path = "/imports"
    tags = ["imports"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.CONSENTS_WRITE, "idempotent": False}  # noqa: RUF012  # the import is idempotent itself

    @post(
        "/robinson",
        operation_id="importRobinson",
        status_code=200,
        responses=errors(401, 403, 409, 413, 422),
        request_max_body_size=None,  # streamed in constant memory; CONSENT_IMPORT_MAX_BYTES is counted as it streams
    )
    async def robinson(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
    ) -> RobinsonReportOut:
        """Import a Robinson list (`text/csv`, UTF-8, `;` or `,`), streamed.

        Columns: street, postcode, city, name (or first_name and last_name), optional house_number and country;
        German headers (Straße, Hausnummer, PLZ, Ort, Vorname, Nachname) work too.

        Entries are kept as keyed hashes only. Known print addresses on the list become `objected`; addresses
        added later are suppressed. All or nothing; importing the same list again changes nothing. A row that
        cannot be read (longer than 256 KiB, a quote never closed, a NUL character) is reported with its line
        number like any wrong row. A body larger than the server's `CONSENT_IMPORT_MAX_BYTES` (default 1 GiB)
        answers 413 and imports nothing. A workspace whose deletion began while the list was read answers 409
        `workspace_deleted` and imports nothing.
        """
        body = _body(request, settings)
        actor = Actor(ActorType.API_KEY, str(principal.api_key_id))
        async with db.begin():
            report = await import_robinson(db, keys, principal.workspace_id, body, actor=actor, source="api")
        return msgspec.convert(report, RobinsonReportOut, from_attributes=True)

    @post(
        "/consents",
        operation_id="importConsents",
        status_code=200,
        responses=errors(401, 403, 413, 415, 422),
        request_max_body_size=None,  # streamed in constant memory; CONSENT_IMPORT_MAX_BYTES is counted as it streams
    )
    async def consents(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
    ) -> ConsentImportReportOut:
        """Import consents collected elsewhere, each with its original proof: NDJSON (`application/x-ndjson`) or CSV.

        A line: `contact` (id, or an external id, created when unknown), `channel` (email, sms, whatsapp, print),
        `address` (or the postal fields for print), `purpose`, `state` (`opted_in`, `opted_out`, `declined`;
        `objected` for print), `captured_at` (RFC 3339), `source`, and for an opt-in `notice_id` or `notice_text`;
        optional `locale`, `timezone` and the evidence (`ip`, `user_agent`, `source_url`, `form_id`, `agent_id`,
        `ticket`, `note`, `document_ref`; in NDJSON as `evidence: {…}`). CSV has these names as its header.

        Each line becomes an `import` event dated `captured_at`. A line older than what the ledger holds changes
        nothing (importing the same file again records nothing; a later withdrawal stands), and an opt-in for an
        address on the do-not-contact list is skipped. Wrong lines are reported; the others are taken, in batches
        of 2,000, each committed on its own. A line that cannot be read (longer than 256 KiB, a CSV quote never
        closed, a NUL character) is reported like any wrong line.

        A body larger than the server's `CONSENT_IMPORT_MAX_BYTES` (default 1 GiB) answers 413: at once when its
        `Content-Length` says so (nothing recorded), else where it passes the limit, saying which lines were
        taken (`lines_taken_through`, `recorded`); import the rest, or the file split, again (lines already
        recorded record nothing). A batch that a concurrent writer's race refuses is taken again; one still refused
        answers 503 `database_busy` (or 409 `contact_merged`, `deleted_meanwhile`) with the same two fields.
        """
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "text/csv":
            lines = csv_lines(_body(request, settings))
        elif content_type in NDJSON_TYPES:
            lines = ndjson_lines(_body(request, settings))
        else:
            raise UnsupportedMediaType(
                f"Send the consents as NDJSON (Content-Type: application/x-ndjson) or CSV (text/csv), not "
                f"'{content_type or 'nothing'}'."
            )
        actor = Actor(ActorType.API_KEY, str(principal.api_key_id))
        report = await import_consents(db, keys, principal.workspace_id, lines, actor=actor)
        return msgspec.convert(report, ConsentImportReportOut, from_attributes=True)
