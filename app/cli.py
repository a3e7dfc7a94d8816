"""The ``consent`` command: serve, migrate, workspace and API-key administration, OpenAPI export."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import msgspec
import structlog

from app.lib.auth import Scope
from app.lib.db import Database, migrate
from app.lib.embedded_pg import EmbeddedPostgres
from app.lib.errors import AppError
from app.lib.observability import configure_logging
from app.settings import Settings, SettingsError

T = TypeVar("T")
log = structlog.get_logger("app.cli")
OPENAPI_PATH = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def _settings() -> Settings:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(settings)
    return settings


@asynccontextmanager
async def open_database(settings: Settings, pool_size: int = 2) -> AsyncIterator[Database]:
    """The configured database, or the embedded one (joined if a service already runs it), migrated."""
    embedded: EmbeddedPostgres | None = None
    url = settings.database.url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir / "postgres")
        new = not (embedded.pgdata / "PG_VERSION").exists()
        url = await embedded.start()
        if new:  # a command run from another folder than the service's: it would quietly work on an empty database
            click.echo(
                f"Note: no database was in {settings.data_dir.resolve()}; a new, empty one was made there. A service"
                " started in another folder uses its own: run consent commands from that folder, or set"
                " CONSENT_DATA_DIR (or DATABASE_URL) to the same value.",
                err=True,
            )
    database = Database.from_url(url, pool_size=pool_size)
    try:
        if embedded is not None:
            assert database.engine is not None
            await migrate(database.engine)
        yield database
    finally:
        await database.dispose()
        if embedded is not None:
            await embedded.stop()


def _run(
    action: Callable[[], Awaitable[T]], *, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
) -> T:
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(action())  # type: ignore[arg-type]  # any awaitable made by a coroutine function
    except AppError as exc:
        raise click.ClickException(exc.detail) from exc


def _fast_loop() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop of uvloop where it is installed (not on Windows), as ``consent serve`` runs (uvicorn's auto).

    ``consent worker`` runs on it: the asyncio loop's own work was a large share of the worker's CPU per message.
    """
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return None
    return uvloop.new_event_loop


def _secret_key(settings: Settings, *, dev_hint: bool = False) -> bytes:
    """The configured root secret, or a clear refusal.

    Only ``serve --dev`` may generate one: a worker or an import with a key of its own would send links the API
    rejects and could not unseal the stored credentials.
    """
    if settings.secret_key is None and settings.embedded_database and (settings.data_dir / "secret_key").exists():
        # the key `serve --dev` generated for this data folder: the same the API uses, read, never made here
        settings = settings.with_dev_secrets()
    if settings.secret_key is None:
        how = " or pass --dev to generate one in the data folder" if dev_hint else ", the same value as the API's"
        raise click.ClickException(f"CONSENT_SECRET_KEY is not set. Set it (32+ random bytes, base64 or hex){how}.")
    return settings.secret_key


@click.group()
def main() -> None:
    """Consent and opt-in management service."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--dev", is_flag=True, help="Generate missing secrets into the data folder (development).")
@click.option("--migrate", "auto_migrate", is_flag=True, help="Apply migrations on start-up (external database).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Server processes sharing the port [default: the CPU count; 1 with --dev].",
)
def serve(host: str, port: int, dev: bool, auto_migrate: bool, workers: int | None) -> None:  # noqa: FBT001  # click flags
    """Run the API. Without DATABASE_URL, on an embedded PostgreSQL in CONSENT_DATA_DIR."""
    import uvicorn  # noqa: PLC0415  # only this command needs the server

    from app.main import create_app  # noqa: PLC0415

    settings = _settings()
    if dev:
        settings = settings.with_dev_secrets()
    _secret_key(settings, dev_hint=True)
    changes: dict[str, Any] = {}
    if not settings.public_base_url_configured:
        changes["public_base_url"] = f"http://{host}:{port}"
    if auto_migrate:
        changes["database"] = msgspec.structs.replace(settings.database, auto_migrate=True)
    settings = msgspec.structs.replace(settings, **changes)
    count = workers or (1 if dev else os.cpu_count() or 1)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "proxy_headers": True,
        "timeout_graceful_shutdown": 20,
    }
    if count > 1:
        _serve_processes(settings, count, options)
        return
    server = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
    server.run()
    if not server.started:
        sys.exit(3)


def _serve_processes(settings: Settings, count: int, options: dict[str, Any]) -> None:
    """``count`` server processes on one port (uvicorn's supervisor restarts one that dies).

    This process prepares what must happen once: it starts the embedded PostgreSQL (and owns it, so a worker's
    restart never stops it) and applies the migrations. The workers get the settings through their environment,
    with the database URL, the secret key and the public URL filled in, and ``PROMETHEUS_MULTIPROC_DIR``: their
    metrics are added up in ``/metrics`` whichever process answers. Background work (the dispatcher, the
    webhook sender, the sweeps) runs in every worker; each claims its rows with ``SKIP LOCKED``.
    """
    import uvicorn  # noqa: PLC0415

    embedded = EmbeddedPostgres(settings.data_dir / "postgres") if settings.database.url is None else None

    async def prepare() -> str:
        url = await embedded.start() if embedded is not None else settings.database.url
        assert url is not None
        if embedded is not None or settings.database.auto_migrate:
            database = Database.from_url(url, pool_size=1)
            assert database.engine is not None
            try:
                await migrate(database.engine)
            finally:
                await database.dispose()
        return url

    url = asyncio.run(prepare())
    metrics_dir = settings.metrics_multiprocess_dir or settings.data_dir / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    for stale in metrics_dir.glob("*.db"):  # counters of an earlier run's processes
        stale.unlink()
    settings.export_for_workers(url, metrics_dir)
    try:
        # a worker imports the whole service before it answers the supervisor's health check (about 3 s on a
        # busy machine): uvicorn's default 5 s killed the first worker of a loaded start (newcomer review)
        uvicorn.run(
            "app.main:app_from_environment", factory=True, workers=count, timeout_worker_healthcheck=30, **options
        )
    finally:
        if embedded is not None:
            asyncio.run(embedded.stop())


@main.command(name="migrate")
def migrate_command() -> None:
    """Apply all migrations (to the embedded database too)."""
    settings = _settings()

    async def action() -> None:
        async with open_database(settings):
            pass  # open_database migrates the embedded database; migrate an external one explicitly
        if settings.database.url is not None:
            database = Database.from_url(settings.database.url, pool_size=1)
            assert database.engine is not None
            try:
                await migrate(database.engine)
            finally:
                await database.dispose()

    _run(action)
    click.echo("migrated to head")


@main.group()
def workspace() -> None:
    """Workspaces (brands / data controllers)."""


@workspace.command(name="create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def workspace_create(name: str, as_json: bool) -> None:  # noqa: FBT001
    """Create a workspace and print its id."""
    from app.workspaces import service  # noqa: PLC0415

    settings = _settings()
    if not 1 <= len(name) <= 200:  # noqa: PLR2004  # the column's CHECK constraint
        raise click.BadParameter("must be 1 to 200 characters", param_hint="NAME")

    async def action() -> uuid.UUID:
        async with open_database(settings) as database, database.sessionmaker() as session, session.begin():
            created = await service.create_workspace(session, name)
            return created.id

    workspace_id = _run(action)
    click.echo(json.dumps({"id": str(workspace_id), "name": name}) if as_json else str(workspace_id))


@workspace.command(name="mail-domains")
@click.argument("workspace_id", type=click.UUID)
@click.argument("action", type=click.Choice(["show", "add", "remove"]), default="show")
@click.argument("domains", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def workspace_mail_domains(
    workspace_id: uuid.UUID,
    action: str,
    domains: tuple[str, ...],
    as_json: bool,  # noqa: FBT001
) -> None:
    """Show, add or remove the domains the workspace's email.from_address may use.

    The operator's list, which the tenant's settings cannot change. Without a list, only the domain of MAIL_FROM
    is allowed (any domain when no SMTP relay is set: nothing leaves the machine). Removing the domain of the
    workspace's from_address clears it: its mail goes out from MAIL_FROM again.
    """
    from app.workspaces import service  # noqa: PLC0415

    if action != "show" and not domains:
        raise click.UsageError(f"{action} needs at least one domain, e.g. example.com")
    settings = _settings()

    async def action_() -> tuple[list[str] | None, bool]:
        async with open_database(settings) as database, database.sessionmaker() as session, session.begin():
            if action == "show":
                return await service.mail_domains(session, workspace_id), False
            change = {"add": domains} if action == "add" else {"remove": domains}
            return await service.change_mail_domains(session, workspace_id, **change)

    listed, cleared = _run(action_)
    if as_json:
        click.echo(json.dumps({"workspace_id": str(workspace_id), "mail_domains": listed, "from_cleared": cleared}))
        return
    if listed:
        click.echo("\n".join(listed))
    elif settings.mail.host is None:
        click.echo("(no list; without SMTP_HOST nothing leaves the machine, so any domain is taken)")
    else:
        click.echo("(no list: the domain of MAIL_FROM only)")
    if cleared:
        click.echo("the workspace's email.from_address was on a removed domain and is cleared (MAIL_FROM applies)")


@main.group()
def apikey() -> None:
    """API keys."""


def _parse_scopes(_ctx: click.Context, _param: click.Parameter, value: str | None) -> list[Scope] | None:
    if value is None:
        return None
    try:
        scopes = [Scope(part.strip()) for part in value.split(",") if part.strip()]
    except ValueError:
        known = ", ".join(s.value for s in Scope if s is not Scope.OPERATOR)  # an operator key: --operator
        raise click.BadParameter(f"known scopes: {known}") from None
    if not scopes:
        raise click.BadParameter("at least one scope")
    return scopes


@apikey.command(name="create")
@click.option("--workspace", "workspace_id", type=click.UUID, help="Workspace id (not with --operator).")
@click.option("--scopes", callback=_parse_scopes, help="Comma-separated, e.g. admin,eligibility:read")
@click.option(
    "--operator", is_flag=True, help="An operator key: manages workspaces (/v1/workspaces), no workspace's data."
)
@click.option("--name", default="cli", show_default=True, help="A label for the key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def apikey_create(
    workspace_id: uuid.UUID | None,
    scopes: list[Scope] | None,
    operator: bool,  # noqa: FBT001
    name: str,
    as_json: bool,  # noqa: FBT001
) -> None:
    """Create an API key; the secret is printed once and is not stored.

    A workspace's key needs --workspace and --scopes; an operator key (--operator) takes neither: it belongs to
    no workspace and carries the one scope ``operator``.
    """
    from app.workspaces import operator as operators  # noqa: PLC0415
    from app.workspaces import service  # noqa: PLC0415

    if operator and (workspace_id is not None or scopes):
        raise click.UsageError("--operator takes neither --workspace nor --scopes: an operator key has no workspace")
    if not operator and (workspace_id is None or not scopes):
        raise click.UsageError("a workspace's key needs --workspace and --scopes (or pass --operator)")
    settings = _settings()

    async def action() -> tuple[uuid.UUID, str]:
        async with open_database(settings) as database, database.sessionmaker() as session, session.begin():
            if operator:
                made, secret = await operators.create_operator_key(session, name)
                return made.id, secret
            assert workspace_id is not None
            key, secret = await service.create_api_key(session, workspace_id, name, scopes or [])
            return key.id, secret

    key_id, secret = _run(action)
    granted = [Scope.OPERATOR.value] if operator else [s.value for s in scopes or []]
    if as_json:
        click.echo(json.dumps({"id": str(key_id), "secret": secret, "scopes": granted}))
    else:
        click.echo(f"id:     {key_id}\nsecret: {secret}\n(store the secret now: it cannot be shown again)")


@apikey.command(name="revoke")
@click.option("--workspace", "workspace_id", type=click.UUID, help="Workspace id (not with --operator).")
@click.option("--operator", is_flag=True, help="The key is an operator key.")
@click.argument("key_id", type=click.UUID)
def apikey_revoke(workspace_id: uuid.UUID | None, operator: bool, key_id: uuid.UUID) -> None:  # noqa: FBT001
    """Revoke an API key at once."""
    from app.workspaces import operator as operators  # noqa: PLC0415
    from app.workspaces import service  # noqa: PLC0415

    if operator == (workspace_id is not None):
        raise click.UsageError("pass --workspace for a workspace's key, or --operator for an operator key")
    settings = _settings()

    async def action() -> None:
        async with open_database(settings) as database, database.sessionmaker() as session, session.begin():
            if operator:
                await operators.revoke_operator_key(session, key_id)
            else:
                assert workspace_id is not None
                await service.revoke_api_key(session, workspace_id, key_id)

    _run(action)
    click.echo("revoked")


def render_openapi() -> str:
    """The OpenAPI document of the code, as committed in ``openapi/openapi.json``."""
    from app.main import create_app  # noqa: PLC0415

    app = create_app(Settings())
    return json.dumps(app.openapi_schema.to_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@main.command()
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=OPENAPI_PATH, show_default=True)
@click.option("--check", is_flag=True, help="Fail if the file differs from the code instead of writing it.")
def openapi(output: Path, check: bool) -> None:  # noqa: FBT001
    """Write (or check) the OpenAPI document generated from the code."""
    document = render_openapi()
    if check:
        if not output.exists() or output.read_text() != document:
            raise click.ClickException(f"{output} is out of date; run 'consent openapi'")
        click.echo(f"{output} is up to date")
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(document)
    click.echo(f"wrote {output}")


@main.command()
@click.argument("message")
def makemigration(message: str) -> None:
    """Generate a migration from the difference between the models and a database at head (development)."""
    from alembic import command  # noqa: PLC0415

    from app.lib.db import MIGRATIONS_DIR, alembic_config  # noqa: PLC0415

    settings = _settings()
    versions = MIGRATIONS_DIR / "versions"
    number = 1 + max((int(p.name[:4]) for p in versions.glob("[0-9][0-9][0-9][0-9]_*.py")), default=0)
    rev_id = f"{number:04d}"

    written: list[Path] = []

    def skip_empty(_context: object, _revision: object, directives: list[Any]) -> None:
        """Write nothing when the models and the database agree (alembic would write an empty migration)."""
        if directives[0].upgrade_ops.is_empty():
            directives[:] = []

    async def action() -> None:
        async with open_database(settings) as database:
            assert database.engine is not None
            if settings.database.url is not None:
                await migrate(database.engine)
            async with database.engine.connect() as conn:
                scripts = await conn.run_sync(
                    lambda sync_conn: command.revision(
                        alembic_config(connection=sync_conn),
                        message=message,
                        autogenerate=True,
                        rev_id=rev_id,
                        process_revision_directives=skip_empty,
                    )
                )
        written.extend(Path(s.path) for s in (scripts if isinstance(scripts, list) else [scripts]) if s is not None)

    _run(action)
    if not written:
        click.echo("no changes: the models and the migrations agree, nothing was written")
        return
    ruff = shutil.which("ruff")
    if ruff:  # the project's style, so the new file passes CI as written (a development tool: may be absent)
        paths = [str(p) for p in written]
        subprocess.run([ruff, "check", "--fix", "--quiet", *paths], check=False)  # noqa: S603  # our own new file
        subprocess.run([ruff, "format", "--quiet", *paths], check=False)  # noqa: S603  # our own new file
    click.echo(f"generated migration {rev_id}; review it, then run the tests (they check for drift)")


@main.group()
def audit() -> None:
    """The tamper-evident ledger."""


@audit.command(name="verify")
@click.option("--workspace", "workspace_id", type=click.UUID, help="One workspace (default: every workspace).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def audit_verify(workspace_id: uuid.UUID | None, as_json: bool) -> None:  # noqa: FBT001
    """Recompute the hash chain; exit status 1 and the first broken event if it does not verify."""
    from app.ledger import repository  # noqa: PLC0415
    from app.ledger.audit import Verification, verify_chain  # noqa: PLC0415

    settings = _settings()

    async def action() -> list[tuple[uuid.UUID, Verification]]:
        async with open_database(settings) as database:
            async with database.sessionmaker() as session:
                ids = [workspace_id] if workspace_id else list(await repository.workspaces_with_events(session))
            checked = []
            for ws in ids:  # a session each: what waits is sealed (and committed) before each check
                async with database.sessionmaker() as session:
                    checked.append((ws, await verify_chain(session, ws)))
            return checked

    results = _run(action)
    for ws, result in results:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "workspace_id": str(ws),
                        "events_checked": result.events_checked,
                        "valid": result.valid,
                        "first_broken_event_id": str(result.first_broken_event_id)
                        if result.first_broken_event_id
                        else None,
                        "first_broken_seq": result.first_broken_seq,
                        "reason": result.reason,
                    }
                )
            )
        elif result.valid:
            click.echo(f"{ws}: {result.events_checked} events, chain valid")
        else:
            click.echo(
                f"{ws}: BROKEN at event {result.first_broken_event_id} (seq {result.first_broken_seq}): {result.reason}"
            )
    if not all(result.valid for _, result in results):
        sys.exit(1)


@main.group(name="import")
def import_() -> None:
    """Import lists and consents."""


@import_.command(name="robinson")
@click.option("--workspace", "workspace_id", required=True, type=click.UUID, help="Workspace id.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Worker processes that read a share of the file each (default: the CPU count, at most 8; a file "
    "under 8 MB is read in this process).",
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_robinson(workspace_id: uuid.UUID, file: Path, as_json: bool, workers: int | None) -> None:  # noqa: FBT001
    """Import a Robinson list (CSV) into a workspace: stored as keyed hashes, known addresses become objected."""
    from app.imports import robinson  # noqa: PLC0415
    from app.imports.robinson_split import WorkerFailed  # noqa: PLC0415
    from app.lib.keys import Keys  # noqa: PLC0415
    from app.workspaces import repository  # noqa: PLC0415

    settings = _settings()
    secret = _secret_key(settings)
    size = file.stat().st_size

    async def action() -> robinson.RobinsonReport:
        async with open_database(settings) as database, database.sessionmaker() as session, session.begin():
            if await repository.get_workspace(session, workspace_id) is None:
                raise click.ClickException(f"workspace {workspace_id} does not exist")
            with click.progressbar(length=size, label="importing", file=sys.stderr, show_pos=False) as bar:
                try:
                    return await robinson.import_robinson(
                        session,
                        Keys(secret),
                        workspace_id,
                        file,
                        actor=robinson.SYSTEM_IMPORT,
                        source=f"cli:{file.name}",
                        progress=bar.update,
                        workers=workers or min(os.cpu_count() or 1, 8),
                    )
                except WorkerFailed as exc:  # nothing was written: said as the command's error, not a traceback
                    raise click.ClickException(f"{exc}; nothing was imported (try --workers 1)") from exc

    report = _run(action)
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    else:
        matched = "known contact" if report.matched == 1 else "known contacts"
        click.echo(
            f"{report.rows} rows: {report.accepted} accepted, {report.rejected} rejected, "
            f"{report.new_entries} new entries, {report.matched} {matched} matched"
        )
        for error in report.errors:
            click.echo(f"  line {error.line}: {error.code}: {error.message}")
    _exit_if_rejected(report.rejected)


#: The exit status of an import that took its file but rejected lines of it (to be fixed and imported again):
#: a script can tell it from success (0) and from a failed command (1; usage errors 2).
REJECTED_LINES = 4


def _exit_if_rejected(rejected: int) -> None:
    if rejected:
        sys.exit(REJECTED_LINES)


@import_.command(name="consents")
@click.option("--workspace", "workspace_id", required=True, type=click.UUID, help="Workspace id.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_consents(workspace_id: uuid.UUID, file: Path, as_json: bool) -> None:  # noqa: FBT001
    """Import consents with their proof: NDJSON (*.ndjson, *.jsonl) or CSV (*.csv), as POST /v1/imports/consents."""
    from app.domain.model import ActorType  # noqa: PLC0415
    from app.imports import consents  # noqa: PLC0415
    from app.ledger.service import Actor  # noqa: PLC0415
    from app.lib.collector import bulk_job  # noqa: PLC0415
    from app.lib.keys import Keys  # noqa: PLC0415
    from app.workspaces import repository  # noqa: PLC0415

    settings = _settings()
    secret = _secret_key(settings)
    read = consents.csv_lines if file.suffix.lower() == ".csv" else consents.ndjson_lines
    size = file.stat().st_size

    async def action() -> consents.ImportReport:
        async with open_database(settings) as database, database.sessionmaker() as session:
            async with session.begin():
                if await repository.get_workspace(session, workspace_id) is None:
                    raise click.ClickException(f"workspace {workspace_id} does not exist")
            actor = Actor(ActorType.SYSTEM, f"cli:{file.name}")
            started = time.monotonic()
            with click.progressbar(
                length=size,
                label="importing",
                file=sys.stderr,
                show_pos=False,
                item_show_func=lambda shown: shown,
            ) as bar:

                async def read_chunks() -> AsyncIterator[bytes]:
                    async for chunk in _chunks(file):
                        bar.update(len(chunk))  # the bar and its ETA follow the bytes read
                        yield chunk

                def taken(report: consents.ImportReport) -> None:
                    rate = report.lines / max(time.monotonic() - started, 1e-9)
                    bar.current_item = f"{report.lines:,} lines, {rate:,.0f} lines/s"
                    bar.render_progress()  # update() draws only when the bytes move

                with bulk_job():  # this process does the import and nothing else (app/lib/collector.py)
                    return await consents.import_consents(
                        session, Keys(secret), workspace_id, read(read_chunks()), actor=actor, progress=taken
                    )

    report = _run_reporting_a_stop(action, as_json=as_json)
    _echo_consent_report(report, as_json=as_json)
    _exit_if_rejected(report.rejected)


def _run_reporting_a_stop(action: Callable[[], Awaitable[T]], *, as_json: bool) -> T:
    """:func:`_run`; with ``--json``, an import cut short also prints its problem as JSON.

    With the lines it took (``lines_taken_through``, ``recorded``), for a script to go on from; the message goes to
    stderr as before.
    """
    try:
        return _run(action)
    except click.ClickException as exc:
        if as_json and isinstance(exc.__cause__, AppError):
            cause = exc.__cause__
            click.echo(json.dumps({"code": cause.code, "detail": cause.detail, **cause.extra}))
        raise


def _echo_consent_report(report: Any, *, as_json: bool) -> None:
    """A consent import's report, as JSON or for a person."""
    if as_json:
        click.echo(msgspec.json.encode(report).decode())
    else:
        click.echo(
            f"{report.lines} lines: {report.recorded} recorded, {report.skipped} skipped, {report.rejected} "
            f"rejected, {report.contacts_created} contacts created, {report.expired} expired on arrival"
        )
        for problem in report.problems:
            click.echo(f"  line {problem.line}: {problem.outcome}: {problem.code}: {problem.message}")
        if report.problems_truncated:
            unlisted = report.skipped + report.rejected - len(report.problems)
            click.echo(f"  … {unlisted} more not listed (lines to fix are kept before lines with nothing to do)")


async def _chunks(path: Path, size: int = 1 << 20) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := await asyncio.to_thread(fh.read, size):
            yield chunk


@main.command()
@click.option("--concurrency", type=click.IntRange(1, 1000), default=64, show_default=True, help="Sends in flight.")
@click.option(
    "--lease-seconds",
    type=click.IntRange(1, 3600),
    default=60,
    show_default=True,
    help="How long a claimed delivery is ours; a dead worker's rows are taken over after it.",
)
@click.option(
    "--deadline",
    type=click.FloatRange(0.1, 300),
    default=15.0,
    show_default=True,
    help="Seconds per provider call (at most 80 % of the lease; a longer one is cut to that).",
)
def worker(concurrency: int, lease_seconds: int, deadline: float) -> None:
    """Run a dispatcher, a webhook sender, a chain runner and the ledger's sealer (SKIP LOCKED or locks: many may run).

    Any number may run.
    """
    import signal  # noqa: PLC0415
    from datetime import timedelta  # noqa: PLC0415

    from app.chains.runner import ChainRunner  # noqa: PLC0415
    from app.channels.adapters import Adapters  # noqa: PLC0415
    from app.ledger.sealer import Sealer  # noqa: PLC0415
    from app.lib.keys import Keys  # noqa: PLC0415
    from app.lib.rounds import freeze_startup_heap  # noqa: PLC0415
    from app.main import mail_sender  # noqa: PLC0415
    from app.messages.dispatcher import CALL_SHARE_OF_LEASE, DispatchConfig, Dispatcher  # noqa: PLC0415
    from app.webhooks.sender import WebhookSender  # noqa: PLC0415

    settings = _settings()
    secret = _secret_key(settings)

    async def action() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with open_database(settings, pool_size=settings.database.pool_size) as database:
            keys = Keys(secret)
            adapters = Adapters(settings, keys, mail_sender(settings))
            config = DispatchConfig(
                batch=concurrency * 2,  # claim what can be in flight soon; leave the rest to other workers
                concurrency=concurrency,
                lease=timedelta(seconds=lease_seconds),
                # a call and its writes stay inside the lease its mark renews (DispatchConfig refuses more)
                deadline=min(deadline, lease_seconds * CALL_SHARE_OF_LEASE),
            )
            dispatcher = Dispatcher(database, keys, settings, adapters, config=config)
            freeze_startup_heap()  # started: what lives as long as the process is not walked by every full collection
            if config.deadline < deadline:
                structlog.get_logger(__name__).warning(
                    "worker_deadline_clamped", deadline=config.deadline, lease_seconds=lease_seconds
                )
            running = type(asyncio.get_running_loop())  # uvloop's where installed (:func:`_fast_loop`)
            structlog.get_logger(__name__).info(
                "worker_started", worker=dispatcher.worker_id, loop=f"{running.__module__}.{running.__qualname__}"
            )
            try:
                sender = WebhookSender(database, keys, allow_private=settings.webhooks_allow_private)
                await asyncio.gather(
                    dispatcher.run(stop),
                    sender.run(stop),
                    ChainRunner(database, push_services=settings.web_push_services).run(stop),
                    Sealer(database).run(stop),
                )
            finally:
                await adapters.aclose()

    _run(action, loop_factory=_fast_loop())


@main.group()
def reports() -> None:
    """The reports' rollups (docs/reporting.md)."""


def _count_rollups(workspace_id: uuid.UUID | None, *, rebuild: bool) -> list[tuple[uuid.UUID, Any, float]]:
    import time  # noqa: PLC0415

    from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

    from app.reports import repository, service  # noqa: PLC0415

    settings = _settings()

    async def action() -> list[tuple[uuid.UUID, Any, float]]:
        async with open_database(settings) as database:
            async with database.sessionmaker() as session:
                ids = [workspace_id] if workspace_id else list(await service.workspaces(session))
            done = []
            for ws in ids:
                started = time.perf_counter()
                async with database.sessionmaker() as session, session.begin():
                    counted = await (service.rebuild if rebuild else service.catch_up)(session, ws)
                seconds = time.perf_counter() - started
                if rebuild:  # today's standing snapshot at once (earlier days' cannot be taken again)
                    async with database.sessionmaker() as session, session.begin():
                        await service.take_standing(session, ws, push_services=settings.web_push_services)
                done.append((ws, counted, seconds))
            if rebuild and done and database.engine is not None:
                try:  # the rebuilds are committed: a failed clean-up is the operator's to know, not a failed command
                    async with database.engine.connect() as connection:
                        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                        await repository.vacuum_rollups(autocommit)
                except DBAPIError as exc:
                    click.echo(f"warning: the rollups were not vacuumed ({exc.orig}); autovacuum will", err=True)
            return done

    return _run(action)


def _echo_counted(results: list[tuple[uuid.UUID, Any, float]], *, as_json: bool) -> None:
    if not results and not as_json:  # (it printed nothing at all: newcomer review)
        click.echo("No workspace has a ledger or queued message events yet: nothing to count.")
    for ws, counted, seconds in results:
        events = counted.ledger_events + counted.message_events
        if as_json:
            fields = {"ledger_events": counted.ledger_events, "message_events": counted.message_events}
            click.echo(json.dumps({"workspace_id": str(ws), **fields, "seconds": round(seconds, 3)}))
        else:
            rate = f", {events / seconds:,.0f} events/s" if seconds > 0 and events else ""
            click.echo(
                f"{ws}: {counted.ledger_events} ledger events, {counted.message_events} message events "
                f"in {seconds:.2f} s{rate}"
            )


@reports.command(name="rebuild")
@click.option("--workspace", "workspace_id", type=click.UUID, help="One workspace (default: every workspace).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reports_rebuild(workspace_id: uuid.UUID | None, as_json: bool) -> None:  # noqa: FBT001
    """Recount the rollups from the ledger and the message history; rows that differ are rewritten.

    Also takes today's snapshot of eligible addresses and suppressions at once.
    """
    _echo_counted(_count_rollups(workspace_id, rebuild=True), as_json=as_json)


@reports.command(name="catch-up")
@click.option("--workspace", "workspace_id", type=click.UUID, help="One workspace (default: every workspace).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def reports_catch_up(workspace_id: uuid.UUID | None, as_json: bool) -> None:  # noqa: FBT001
    """Count what the ledger and the message history gained since the last catch-up (reports do it themselves)."""
    _echo_counted(_count_rollups(workspace_id, rebuild=False), as_json=as_json)


@main.command(name="console-link")
@click.option("--workspace", "workspace_id", required=True, type=click.UUID, help="Workspace id.")
@click.option("--admin", is_flag=True, help="Sign in with the 'admin' scope (erasure) instead of 'audit:read'.")
@click.option(
    "--base-url",
    help="Where the service is reached (default PUBLIC_BASE_URL, else http://127.0.0.1:8000): pass "
    "http://127.0.0.1:PORT for a local `consent serve --port PORT`.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def console_link(workspace_id: uuid.UUID, admin: bool, base_url: str | None, as_json: bool) -> None:  # noqa: FBT001  # click flags
    """A single-use login link to the console (valid 10 minutes), through a new API key named 'console-link'.

    Each call makes a new key; revoking it (its id is printed) ends every session its link opened.
    """
    from app.console import controllers as console  # noqa: PLC0415
    from app.console import service as console_service  # noqa: PLC0415
    from app.lib.auth import Principal  # noqa: PLC0415
    from app.workspaces import repository, service  # noqa: PLC0415

    settings = _settings()
    if base_url is not None:
        try:
            settings = msgspec.structs.replace(settings, public_base_url=Settings.base_url(base_url))
        except SettingsError as exc:
            raise click.BadParameter(str(exc), param_hint="--base-url") from None
    scope = Scope.ADMIN if admin else Scope.AUDIT_READ

    async def action() -> tuple[uuid.UUID, Any]:
        async with open_database(settings) as database, database.sessionmaker() as session, session.begin():
            if await repository.get_workspace(session, workspace_id) is None:
                raise click.ClickException(f"No workspace {workspace_id}.")
            key, _secret = await service.create_api_key(session, workspace_id, "console-link", [scope])
            principal = Principal(workspace_id=workspace_id, api_key_id=key.id, scopes=frozenset({scope.value}))
            return key.id, await console_service.issue_link(session, principal)

    key_id, issued = _run(action)
    url = console.login_url(settings, issued.token)
    if as_json:
        click.echo(json.dumps({"url": url, "expires_at": issued.expires_at.isoformat(), "api_key_id": str(key_id)}))
    else:
        click.echo(f"url:        {url}\nexpires_at: {issued.expires_at.isoformat()}\napi_key_id: {key_id}")
        click.echo("(single use; revoke the key to end the sessions it opens)")
