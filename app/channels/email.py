"""Email: the SMTP relay (or the ``.eml`` outbox), the sender, unsubscribe headers for marketing, SMTP refusals."""

from __future__ import annotations

import uuid
from dataclasses import replace

from app.channels.adapters import Adapters
from app.channels.base import ChannelSpec, Effect, Sending
from app.domain.model import Channel, LegalBasis, PurposeKind, Reachability
from app.emails.service import unsubscribe_urls
from app.emails.tokens import UnsubscribeTarget
from app.workspaces.settings import WorkspaceSettings
from channel_providers.base import ChannelAdapter, Outbound, Outcome
from channel_providers.email import EmailAdapter, Unsubscribe


def adapter(adapters: Adapters, workspace_id: uuid.UUID, settings: WorkspaceSettings) -> ChannelAdapter:  # noqa: ARG001  # the registry's signature
    """One adapter for every workspace: the process's mail sender."""
    return adapters.kept(("email",), lambda: EmailAdapter(adapters.mail_sender))


def compose(sending: Sending) -> Outbound:
    """From the workspace's sender (else the service's); marketing mail carries its unsubscribe URLs (RFC 8058).

    Mail on the existing-customer basis (``uwg_7_3``) also carries the objection notice, pointing at the
    unsubscribe page (UWG §7(3) No. 4: in every mail).
    """
    extras = {}
    if sending.purpose_kind is PurposeKind.MARKETING:
        lang = (sending.locale or sending.settings.locale)[:2]
        target = UnsubscribeTarget(sending.point_id, sending.purpose_id, sending.message_id)
        unsubscribe = unsubscribe_urls(sending.service, sending.keys, target, lang)
        if sending.legal_basis is LegalBasis.UWG_7_3:
            unsubscribe = replace(unsubscribe, objection_notice=True)
        extras["unsubscribe"] = unsubscribe
    return sending.outbound(sender=sending.settings.email.from_address or sending.service.mail.mail_from, extras=extras)


def carries_objection_notice(outbound: Outbound) -> bool:
    """Whether the mail will show the objection notice with a place to object (the unsubscribe page)."""
    unsubscribe = outbound.extras.get("unsubscribe")
    return isinstance(unsubscribe, Unsubscribe) and unsubscribe.objection_notice and bool(unsubscribe.page_url)


SPEC = ChannelSpec(
    channel=Channel.EMAIL,
    adapter=adapter,
    compose=compose,
    # an SMTP 5xx: the address does not take mail; whether the person consents is another matter
    feedback={Outcome.PERMANENT: Effect(Reachability.UNDELIVERABLE)},
    carries_objection_notice=carries_objection_notice,
)
