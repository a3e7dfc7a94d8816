"""The provider adapters of one process, built on first use from the service's and the workspaces' configuration.

Real providers where credentials are configured; otherwise, in development (``CONSENT_DEV_OUTBOX``), the dev
adapters writing to ``<CONSENT_DATA_DIR>/outbox/<workspace>/<channel>/``, so the service runs with no accounts,
and in production an adapter that fails the delivery, saying which provider the workspace lacks. Which adapter a
channel uses is the channel module's decision (its ``adapter`` factory); this class only keeps what was built, so
that each account has one client and one connection pool, and closes them at shutdown.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable
from typing import Protocol, TypeVar, cast, runtime_checkable

from app.domain.model import Channel
from app.lib.keys import Keys
from app.lib.outbound import GuardedTransport
from app.settings import Settings
from channel_providers.base import ChannelAdapter, Outbound, Outcome, SendResult
from channel_providers.email import MailSender
from channel_providers.files import FileDropAdapter

_A = TypeVar("_A")


@runtime_checkable
class _Closable(Protocol):
    async def aclose(self) -> None: ...


class Adapters:
    """Builds and keeps provider adapters (one Twilio client per account, one FCM client per service account…)."""

    def __init__(self, settings: Settings, keys: Keys, mail_sender: MailSender) -> None:
        self.settings = settings
        self.keys = keys
        self.mail_sender = mail_sender
        self.outbox_dir = settings.data_dir / "outbox"
        self._made: dict[Hashable, object] = {}

    def kept(self, key: Hashable, build: Callable[[], _A]) -> _A:
        """The adapter kept under ``key``, built by ``build`` the first time (keys name the provider first)."""
        if key not in self._made:
            self._made[key] = build()
        return cast("_A", self._made[key])

    def guarded(self, deadline: float, *, hosts: tuple[str, ...] | None = None) -> GuardedTransport:
        """A new outbound guard for an adapter whose URLs a tenant or a browser gave (STYLE.md rule 22).

        ``hosts``: the host patterns its requests must match, where there is such a list (web push).
        """
        return GuardedTransport(allow_private=self.settings.webhooks_allow_private, deadline=deadline, hosts=hosts)

    def outbox(self, channel: Channel, workspace_id: uuid.UUID) -> ChannelAdapter:
        """The adapter of a channel the workspace has no provider for.

        In development the workspace's own outbox folder; else an adapter that fails every delivery and says why
        (never a silent "sent").
        """
        if not self.settings.dev_outbox:
            return self.kept(("unconfigured", channel), lambda: Unconfigured(channel.value))
        return self.kept(
            ("outbox", channel, workspace_id),
            lambda: FileDropAdapter(self.outbox_dir / str(workspace_id) / channel.value),
        )

    async def aclose(self) -> None:
        """Close the providers' connection pools."""
        made, self._made = list(self._made.values()), {}
        for adapter in made:
            if isinstance(adapter, _Closable):
                await adapter.aclose()


class Unconfigured:
    """The adapter of a channel whose provider a workspace has not configured (production): every send fails."""

    def __init__(self, channel: str) -> None:
        self.channel = channel

    async def send(self, outbound: Outbound) -> SendResult:  # noqa: ARG002  # the Protocol's signature
        """Refuse, naming what is missing; the delivery fails for good (configuring the provider is the fix)."""
        return SendResult(
            Outcome.PERMANENT,
            error_code="provider_not_configured",
            detail=f"This workspace has no {self.channel} provider configured (see the workspace settings).",
        )
