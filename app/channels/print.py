"""Print: jobs posted to the workspace's print house (through the outbound guard), else the daily batch file."""

from __future__ import annotations

import uuid

from app.channels.adapters import Adapters
from app.channels.base import ChannelSpec, plain
from app.domain.model import Channel
from app.workspaces.service import PRINT_HOUSE_TOKEN, sealing_context
from app.workspaces.settings import WorkspaceSettings
from channel_providers.base import ChannelAdapter
from channel_providers.files import PrintBatchAdapter, PrintHouseAdapter

_TIMEOUT = 15.0


def adapter(adapters: Adapters, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> ChannelAdapter:
    """The workspace's print house when it has one; else the batch file a print house collects."""
    house = settings.print_house
    if not house.url:
        # one batch file per workspace: a print house collecting one tenant's letters gets no other tenant's
        return adapters.kept(
            ("print_batch", workspace_id),
            lambda: PrintBatchAdapter(adapters.outbox_dir / str(workspace_id) / "print"),
        )
    url, sealed = house.url, house.token_sealed

    def build() -> PrintHouseAdapter:
        token = adapters.keys.unseal(sealed, sealing_context(workspace_id, PRINT_HOUSE_TOKEN)) if sealed else None
        return PrintHouseAdapter(url, token, timeout=_TIMEOUT, transport=adapters.guarded(_TIMEOUT))

    return adapters.kept(("print_house", url, sealed), build)


SPEC = ChannelSpec(channel=Channel.PRINT, adapter=adapter, compose=plain)
