"""``create_app(settings)``: builds the whole service. Importing this module has no side effects."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import structlog
from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from sqlalchemy.ext.asyncio import AsyncSession

from app.chains.controllers import ChainController, ChainRunController
from app.chains.fastpath import chain_runs_fast_path
from app.chains.runner import ChainRunner
from app.chains.service import RunPlans
from app.channels import outbox_files
from app.channels.adapters import Adapters
from app.console import controllers as console
from app.eligibility.controllers import EligibilityController
from app.eligibility.fastpath import eligibility_fast_path
from app.emails.controllers import ConfirmationPages, EmailWebhookController, UnsubscribePages
from app.emails.service import lapse_expired
from app.imports.controllers import ImportController
from app.ledger import partitions
from app.ledger.controllers import AuditController, ContactController, ObjectionController, WithdrawalController
from app.ledger.sealer import Sealer
from app.lib.auth import KeyCache, api_key_guard, provide_principal
from app.lib.copystream import StreamBudget
from app.lib.db import Database, head_revision, migrate
from app.lib.embedded_pg import EmbeddedPostgres
from app.lib.errors import Unavailable, exception_handlers
from app.lib.idempotency import Replayed, idempotency_middleware, prune, replayed_response
from app.lib.inputs import refuse_nul
from app.lib.keys import Keys
from app.lib.observability import Metrics, configure_logging, request_middleware_factory
from app.lib.openapi import declare_common_responses
from app.lib.orm import utcnow
from app.lib.repository import prune_callbacks
from app.lib.rounds import freeze_startup_heap
from app.lifecycle import service as lifecycle
from app.lifecycle.controllers import PurposeLifecycleController, RepermissionPages
from app.messages.controllers import MessageController, TrackingPages
from app.messages.dispatcher import Dispatcher
from app.operator.controllers import OperatorWorkspaceController
from app.ops.controllers import health, metrics, ready
from app.preferences.api import PreferenceApi
from app.preferences.brand import BrandStylesheet
from app.preferences.controllers import PreferenceLinkController, PreferencePages
from app.preferences.request import PreferenceRequestPages, PreferenceViaPages
from app.privacy.controllers import DataSubjectController
from app.privacy.erasure_requests import ErasureRequestController
from app.privacy.mydata import MyDataPages
from app.purchases.controllers import PurchaseController
from app.purposes.controllers import NoticeController, PurposeController
from app.push.controllers import PushController
from app.reports import service as reports
from app.reports.controllers import ReportController
from app.settings import Settings
from app.signups.controllers import SignupController
from app.site import controllers as site
from app.site import reference
from app.twilio.controllers import TwilioWebhookController
from app.webhooks.controllers import WebhookSubscriptionController
from app.webhooks.outbox import prune_deliveries
from app.webhooks.sender import WebhookSender
from app.workspaces import repository as workspaces_repository
from app.workspaces import service as workspace_service
from app.workspaces.controllers import ApiKeyController, WorkspaceController
from channel_providers.email import MailSender, SmtpConfig, sender_for

log = structlog.get_logger(__name__)


async def _provide_db(state: State) -> AsyncIterator[AsyncSession]:
    database: Database = state.database
    async with database.sessionmaker() as session:
        yield session


def _from_state(name: str) -> Provide:
    """A dependency that hands the handler what create_app or the lifespan put in ``app.state`` under ``name``.

    The handler's annotation gives its type, which Litestar checks.
    """

    def provide(state: State) -> Any:
        return state[name]

    return Provide(provide, sync_to_thread=False)


@functools.cache
def _head_revision() -> str | None:
    """The newest migration in the code, read once a process.

    Alembic parses every migration script for it (30 ms, which each test that starts an app would pay again), and
    the scripts do not change under a running process.
    """
    return head_revision()


def _provide_keys(state: State) -> Keys:
    keys: Keys | None = state.derived_keys
    if keys is None:  # only tooling (OpenAPI export) builds an app without a secret key
        raise Unavailable("CONSENT_SECRET_KEY is not configured.", code="secret_key_missing")
    return keys


_LAPSE_INTERVAL_SECONDS = 60.0
_FILES_INTERVAL_SECONDS = 3600.0
#: Lifecycle batches (500 consents a purpose each) one round may run before the loop sleeps.
_LIFECYCLE_BATCHES = 20
_SHUTDOWN_GRACE_SECONDS = 20.0
STATIC_DIR = Path(__file__).parent / "static"


async def _lapse_loop(database: Database, settings: Settings) -> None:
    """Expire lapsed signups and forget old keys and deliveries each minute; prune outbox files each hour.

    Once a minute: signups whose link lapsed expire, old idempotency keys and ended webhook deliveries are
    forgotten, consents past their end are recorded; once an hour (the first time at start-up), outbox and print
    batch files past their retention are deleted and the ledger's coming monthly partitions are made. Any process
    may run it.
    """
    files_pruned_at = 0.0
    while True:
        if time.monotonic() - files_pruned_at > _FILES_INTERVAL_SECONDS:
            files_pruned_at = time.monotonic()
            try:
                outbox = settings.data_dir / "outbox"
                pruned = await asyncio.to_thread(outbox_files.prune, outbox, settings.outbox_retention_days)
                if pruned:
                    log.info("outbox_files_pruned", count=pruned)
            except OSError:
                log.exception("outbox_prune_failed")
            await _ensure_partitions(database)
        try:
            async with database.sessionmaker() as session, session.begin():
                lapsed = await lapse_expired(session)
                await prune(session)
                await prune_deliveries(session)
                await prune_callbacks(session, utcnow())
            if lapsed:
                log.info("confirmations_lapsed", count=lapsed)
        except Exception:  # a failed round is logged and retried; the loop must not die
            log.exception("lapse_sweep_failed")
        try:  # consents past their validity or inactivity end; re-permission messages (app/lifecycle)
            for _ in range(_LIFECYCLE_BATCHES):  # a backlog goes in batches of short transactions
                async with database.sessionmaker() as session, session.begin():
                    swept = await lifecycle.sweep(
                        session, base_url=settings.public_base_url, push_services=settings.web_push_services
                    )
                if not swept.more:
                    break
        except Exception:
            log.exception("lifecycle_sweep_failed")
        await asyncio.sleep(_LAPSE_INTERVAL_SECONDS)


async def _ensure_partitions(database: Database) -> None:
    """The ledger's partitions for this month and the next ones (at start-up, then hourly; never fatal)."""
    try:
        async with database.sessionmaker() as session, session.begin():
            done = await partitions.ensure_partitions(session)
    except Exception:  # retried within the hour; until the month begins its events would go to the default
        log.exception("ledger_partitions_failed")
        return
    if done.created:
        log.info("ledger_partitions_created", partitions=done.created)
    if done.left_in_default:
        log.warning("ledger_partitions_left_in_default", partitions=done.left_in_default)


async def _standing_loop(database: Database, push_services: tuple[str, ...] | None) -> None:
    """The reports' standing snapshots, in a loop of their own.

    Counting a large workspace's audiences takes seconds per purpose: it must not hold back the lapse sweep and
    the consent lifecycle.
    """
    while True:
        await _standing_round(database, push_services)
        await asyncio.sleep(_LAPSE_INTERVAL_SECONDS)


async def _check_time_zones(database: Database) -> None:
    """Warn where the database's tz release reads a zone in use otherwise than the service's (never fatal)."""
    try:
        async with database.sessionmaker() as session:
            drift = await workspace_service.time_zone_drift(session)
    except Exception:
        log.exception("time_zone_check_failed")
        return
    for zone, instants in drift.items():
        log.warning(
            "time_zone_data_differs",
            zone=zone,
            first=instants[0].isoformat(),
            count=len(instants),
            hint="consent ends follow the database; send windows and shown dates the service: update the older",
        )


async def _standing_round(database: Database, push_services: tuple[str, ...] | None) -> None:
    """The reports' standing snapshots (eligible addresses, suppressions) that are due: one transaction each.

    Every ``STANDING_INTERVAL`` per workspace; several processes share them (an advisory lock per workspace).
    """
    try:
        async with database.sessionmaker() as session:
            due = await reports.standing_due(session)
    except Exception:  # a failed round is logged and retried; the loop must not die
        log.exception("report_standing_failed")
        return
    for workspace_id in due:  # one workspace's failure (a stored time zone the database refuses) is its own
        try:
            async with database.sessionmaker() as session, session.begin():
                await reports.take_standing_if_due(session, workspace_id, push_services=push_services)
        except Exception:
            log.exception("report_standing_failed", workspace_id=str(workspace_id))


@asynccontextmanager
async def _background(app: Litestar, settings: Settings, database: Database) -> AsyncIterator[None]:
    """The lapse sweep and (unless switched off) a dispatcher, a webhook sender and a chain runner."""
    sweeper = asyncio.create_task(_lapse_loop(database, settings))
    snapshots = asyncio.create_task(_standing_loop(database, settings.web_push_services))
    stop = asyncio.Event()
    metrics: Metrics = app.state.metrics
    # always, in every process: the changes this process commits are chained by it (others' leftovers by polling)
    sealing = asyncio.create_task(Sealer(database, lag=metrics.seal_lag).run(stop))
    keys: Keys | None = app.state.derived_keys
    adapters = Adapters(settings, keys, app.state.mail_sender) if keys is not None else None
    workers: dict[str, asyncio.Task[None]] = {}
    if settings.dispatcher and adapters is not None and keys is not None:
        sender = WebhookSender(database, keys, allow_private=settings.webhooks_allow_private)
        workers["dispatcher"] = asyncio.create_task(Dispatcher(database, keys, settings, adapters).run(stop))
        workers["webhook_sender"] = asyncio.create_task(sender.run(stop))
        runner = ChainRunner(database, push_services=settings.web_push_services)
        workers["chain_runner"] = asyncio.create_task(runner.run(stop))
    try:
        yield
    finally:
        stop.set()
        for task in (sweeper, snapshots):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for name, task in {"sealer": sealing, **workers}.items():
            # let the batch in flight finish and record its outcomes (a cancelled send would be repeated by the
            # next worker once its lease runs out); cancel only if it takes too long
            try:
                await asyncio.wait_for(task, _SHUTDOWN_GRACE_SECONDS)
            except TimeoutError:
                log.warning("worker_cancelled_at_shutdown", worker=name)
        if adapters is not None:
            await adapters.aclose()


def mail_sender(settings: Settings) -> MailSender:
    """The SMTP relay of ``SMTP_HOST``, or the dev outbox folder ``<CONSENT_DATA_DIR>/outbox/email``."""
    mail = settings.mail
    smtp = (
        SmtpConfig(host=mail.host, port=mail.port, tls=mail.tls, username=mail.username, password=mail.password)
        if mail.host
        else None
    )
    return sender_for(smtp, settings.data_dir / "outbox" / "email")


def app_from_environment() -> Litestar:
    """The app of one process of ``consent serve --workers N``: the settings its parent put in the environment."""
    return create_app(Settings.from_env())


def create_app(settings: Settings | None = None, *, database: Database | None = None) -> Litestar:
    """The service. ``database`` injects a ready database (tests); otherwise the lifespan opens one.

    With no ``DATABASE_URL`` the lifespan starts the embedded PostgreSQL in ``CONSENT_DATA_DIR`` and applies
    the migrations; with one, migrations run only when ``settings.database.auto_migrate`` is set.
    """
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # what use() gave the app (create_app's arguments, or those of a later use)
        settings: Settings = app.state.settings
        database: Database | None = app.state.injected_database
        app.state.head_revision = _head_revision()
        if database is not None:
            app.state.database = database
            yield
            return
        embedded: EmbeddedPostgres | None = None
        url = settings.database.url
        if url is None:
            embedded = EmbeddedPostgres(settings.data_dir / "postgres")
            url = await embedded.start()
            log.info("database_embedded", data_dir=str(embedded.pgdata), owner=embedded.owner)
        opened = Database.from_url(url, pool_size=settings.database.pool_size)
        try:
            if embedded is not None or settings.database.auto_migrate:
                assert opened.engine is not None
                await migrate(opened.engine)
            await opened.open_driver_pool(settings.database.pool_size, streams=settings.streams.total)
            app.state.database = opened
            await _check_time_zones(opened)
            # Everything alive now lives as long as the process: leave it out of the cyclic collector's full
            # passes, which otherwise walk the whole application on every oldest-generation collection
            # (a pause that lands on whichever request allocates at that moment).
            freeze_startup_heap()
            async with _background(app, settings, opened):
                yield
        finally:
            await opened.dispose()
            if embedded is not None:
                await embedded.stop()

    v1 = Router(
        path="/v1",
        route_handlers=[
            ApiKeyController,
            WorkspaceController,
            OperatorWorkspaceController,
            PurposeController,
            PurposeLifecycleController,
            NoticeController,
            ContactController,
            DataSubjectController,
            ErasureRequestController,
            PreferenceLinkController,
            WithdrawalController,
            ObjectionController,
            AuditController,
            ReportController,
            console.ConsoleLinkController,
            SignupController,
            EligibilityController,
            ImportController,
            PushController,
            MessageController,
            ChainController,
            ChainRunController,
            WebhookSubscriptionController,
            PurchaseController,
        ],
        guards=[api_key_guard],
        middleware=[idempotency_middleware],
        security=[{"bearer": []}],
    )
    app = Litestar(
        route_handlers=[
            site.landing,
            site.assets_router(),
            health,
            ready,
            metrics,
            v1,
            TwilioWebhookController,
            EmailWebhookController,
            ConfirmationPages,
            UnsubscribePages,
            PreferencePages,
            PreferenceApi,
            MyDataPages,
            PreferenceRequestPages,
            PreferenceViaPages,
            BrandStylesheet,
            console.ConsolePages,
            console.assets_router(),
            RepermissionPages,
            create_static_files_router(
                path="/static", directories=[STATIC_DIR], include_in_schema=False, opt={"public": True}
            ),
            TrackingPages,
        ],
        lifespan=[lifespan],
        dependencies={
            "db": Provide(_provide_db),
            "principal": Provide(provide_principal),
            "keys": Provide(_provide_keys, sync_to_thread=False),
            # what the lifespan and create_app put in app.state, as typed dependencies for the handlers
            **{name: _from_state(name) for name in ("database", "settings", "mail_sender", "key_cache")},
            "metrics_registry": _from_state("metrics"),
            "head_revision": _from_state("head_revision"),
        },
        # a request whose Idempotency-Key a concurrent one committed first answers that one's answer
        exception_handlers={**exception_handlers(), Replayed: replayed_response},
        before_request=refuse_nul,  # a NUL character is refused before any handler could try to store it
        openapi_config=OpenAPIConfig(
            title="Consent Service API",
            version=version("consent-service"),
            description="Per-channel opt-in, a tamper-evident consent ledger, eligibility and routing.",
            openapi_router=reference.openapi_router(),
            render_plugins=reference.render_plugins(),
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", description="API key")}
            ),
        ),
        logging_config=None,  # logging is ours (structlog); Litestar's default would override it
        debug=False,
    )
    declare_common_responses(app)
    use(app, settings, database)
    return app


def use(app: Litestar, settings: Settings, database: Database | None = None) -> None:
    """Give ``app``, made by :func:`create_app`, ``settings``, ``database`` and a fresh state.

    Afterwards ``app`` is what ``create_app(settings, database=database)`` returns: only its routes, the costly
    part to build (a fifth of a second), stay. create_app calls it once; the tests call it again to pass one app
    from test to test (never while its lifespan runs).
    """
    metrics_registry = Metrics()
    app.state = State(
        {
            "settings": settings,
            "metrics": metrics_registry,
            "key_cache": KeyCache(workspaces_repository.find_active_key),
            "chain_run_plans": RunPlans(),  # the chains' steps a run needs, per version (app.chains.fastpath)
            "streams": StreamBudget(
                settings.streams.total,
                settings.streams.per_key,
                settings.streams.send_timeout,
                per_workspace=settings.streams.per_workspace,
            ),
            "mail_sender": mail_sender(settings),
            "derived_keys": Keys(settings.secret_key) if settings.secret_key is not None else None,
            "injected_database": database,  # the lifespan opens a database only without one
        }
    )
    app.on_startup = [lambda: configure_logging(settings)] if database is None else []
    # Outermost, around routing and exception handling: every request gets an id, a log line and metrics,
    # 404s and 500s included. Around the handler Litestar's constructor made (so a second use replaces the
    # first one's middleware instead of wrapping it).
    app.asgi_handler = request_middleware_factory(metrics_registry)(
        chain_runs_fast_path(eligibility_fast_path(app._create_asgi_handler()))  # noqa: SLF001
    )
