"""The provider adapters of one process, built on first use from the service's and the workspaces' configuration.

Real providers where credentials are configured; otherwise the dev adapters writing to
``<CONSENT_DATA_DIR>/outbox/<channel>/``, so the service runs with no accounts. Which adapter a channel uses is
the channel module's decision (its ``adapter`` factory); this class only keeps what was built, so that each
account has one client and one connection pool, and closes them at shutdown.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol, TypeVar, cast, runtime_checkable

from app.domain.model import Channel
from app.lib.keys import Keys
from app.lib.outbound import GuardedTransport
from app.settings import Settings
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

    def guarded(self, deadline: float) -> GuardedTransport:
        """A new outbound guard for an adapter whose URLs a tenant or a browser gave (STYLE.md rule 22)."""
        return GuardedTransport(allow_private=self.settings.webhooks_allow_private, deadline=deadline)

    def outbox(self, channel: Channel) -> FileDropAdapter:
        """The dev adapter writing the channel's deliveries as files to the local outbox."""
        return self.kept(("outbox", channel), lambda: FileDropAdapter(self.outbox_dir / channel.value))

    async def aclose(self) -> None:
        """Close the providers' connection pools."""
        made, self._made = list(self._made.values()), {}
        for adapter in made:
            if isinstance(adapter, _Closable):
                await adapter.aclose()
