"""Workspace and API-key operations (used by the API and the CLI)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel
from app.lib.auth import Scope, generate_key
from app.lib.errors import InvalidInput, NotFound
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.workspaces import repository
from app.workspaces.models import ApiKey, Workspace
from app.workspaces.schemas import WorkspaceSettingsIn
from app.workspaces.settings import (
    AppPushSettings,
    EmailSettings,
    PrintHouseSettings,
    SendWindow,
    TwilioSettings,
    WebPushSettings,
    WorkspaceSettings,
)


async def create_workspace(session: AsyncSession, name: str) -> Workspace:
    """Create a workspace (the caller commits)."""
    return await repository.add_workspace(session, name)


async def create_api_key(
    session: AsyncSession, workspace_id: uuid.UUID, name: str, scopes: Iterable[Scope]
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the secret, which is not stored and cannot be shown again."""
    if await repository.get_workspace(session, workspace_id) is None:
        raise NotFound(f"Workspace {workspace_id} does not exist.", code="workspace_not_found")
    secret, secret_hash = generate_key()
    key = ApiKey(
        workspace_id=workspace_id,
        name=name,
        display_prefix=secret[:10],
        secret_hash=secret_hash,
        scopes=sorted({Scope(scope).value for scope in scopes}),
    )
    return await repository.add_api_key(session, key), secret


async def revoke_api_key(session: AsyncSession, workspace_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Revoke a key; 404 for unknown ids and for ids of other workspaces alike."""
    if not await repository.revoke_api_key(session, workspace_id, key_id, utcnow()):
        raise NotFound("No API key with this id.", code="api_key_not_found")


def sealing_context(workspace_id: uuid.UUID, name: str = "twilio_auth_token") -> str:
    """Binds a sealed credential to its workspace and field: a copied ciphertext does not open elsewhere."""
    return f"workspace:{workspace_id}:{name}"


EMAIL_WEBHOOK_SECRET = "email_webhook_secret"  # noqa: S105  # a field name, not a secret
VAPID_KEY = "vapid_private_key"
FCM_SERVICE_ACCOUNT = "fcm_service_account"
APNS_KEY = "apns_private_key"
PRINT_HOUSE_TOKEN = "print_house_token"  # noqa: S105  # a field name, not a secret
_MIN_WEBHOOK_SECRET = 32


async def settings_of(session: AsyncSession, workspace_id: uuid.UUID) -> WorkspaceSettings:
    """The workspace's settings (defaults where unset)."""
    workspace = await repository.get_workspace(session, workspace_id)
    if workspace is None:
        raise NotFound("No such workspace.", code="workspace_not_found")
    return WorkspaceSettings.load(workspace.settings)


async def replace_settings(
    session: AsyncSession, keys: Keys, workspace_id: uuid.UUID, new: WorkspaceSettingsIn
) -> WorkspaceSettings:
    """Validate and store the settings; purposes they name must exist; the token is sealed, or kept if omitted."""
    from app.purposes.repository import get_by_key  # noqa: PLC0415  # purposes depend on workspaces, not back

    _check_send_windows(new.send_windows)
    current = await settings_of(session, workspace_id)
    named = {*new.phone.start_words.values(), *([new.phone.default_purpose] if new.phone.default_purpose else [])}
    for key in sorted(named):
        if await get_by_key(session, workspace_id, key) is None:
            raise InvalidInput(
                f"The settings name the purpose '{key}', which does not exist.", code="purpose_not_found"
            )
    sealed = current.twilio.auth_token_sealed
    if new.twilio.auth_token is not None:
        token = new.twilio.auth_token.strip()
        sealed = keys.seal(token, sealing_context(workspace_id)) if token else None
    email_secret = current.email.webhook_secret_sealed
    if new.email.webhook_secret is not None:
        secret = new.email.webhook_secret.strip()
        if secret and len(secret) < _MIN_WEBHOOK_SECRET:
            raise InvalidInput(
                "email.webhook_secret must be at least 32 characters (use a random value).",
                code="webhook_secret_too_short",
            )
        email_secret = keys.seal(secret, sealing_context(workspace_id, EMAIL_WEBHOOK_SECRET)) if secret else None
    given = msgspec.to_builtins(new.email)
    given.pop("webhook_secret", None)
    given.pop("webhook_secret_set", None)
    email = msgspec.convert({**given, "webhook_secret_sealed": email_secret}, EmailSettings)
    web_push = WebPushSettings(
        subject=new.web_push.subject,
        vapid_public_key=current.web_push.vapid_public_key,
        vapid_private_key_sealed=current.web_push.vapid_private_key_sealed,
    )
    if new.web_push.vapid_private_key:
        from app.push import vapid  # noqa: PLC0415  # push depends on workspaces, not back

        try:
            private = vapid.load_private(new.web_push.vapid_private_key.strip())
        except ValueError as exc:
            raise InvalidInput(
                f"web_push.vapid_private_key is not a P-256 key: {exc}.", code="invalid_vapid_key"
            ) from None
        web_push = msgspec.structs.replace(
            web_push,
            vapid_public_key=vapid.public_of(private),
            vapid_private_key_sealed=keys.seal(vapid.raw_private(private), sealing_context(workspace_id, VAPID_KEY)),
        )
    app_push = _app_push(keys, workspace_id, current.app_push, new)
    print_token = current.print_house.token_sealed
    if new.print_house.token is not None:
        token = new.print_house.token.strip()
        print_token = keys.seal(token, sealing_context(workspace_id, PRINT_HOUSE_TOKEN)) if token else None
    print_house = PrintHouseSettings(url=new.print_house.url, token_sealed=print_token)
    settings = WorkspaceSettings(
        brand=new.brand,
        locale=new.locale,
        default_region=new.default_region,
        timezone=new.timezone,
        phone=new.phone,
        twilio=TwilioSettings(account_sid=new.twilio.account_sid, auth_token_sealed=sealed),
        email=email,
        web_push=web_push,
        app_push=app_push,
        print_house=print_house,
        send_windows=new.send_windows,
    )
    await repository.save_settings(session, workspace_id, settings.dump())
    return settings


def _app_push(
    keys: Keys, workspace_id: uuid.UUID, current: AppPushSettings, new: WorkspaceSettingsIn
) -> AppPushSettings:
    """FCM service account and APNs key: validated and sealed when given (an empty string removes one)."""
    from channel_providers.apns import load_key  # noqa: PLC0415
    from channel_providers.fcm import ServiceAccountError, parse_service_account  # noqa: PLC0415

    given = new.app_push
    project, account_sealed = current.fcm_project_id, current.fcm_service_account_sealed
    if given.fcm_service_account is not None:
        text = given.fcm_service_account.strip()
        project, account_sealed = None, None
        if text:
            try:
                account = parse_service_account(text)
            except (ServiceAccountError, ValueError) as exc:
                raise InvalidInput(
                    f"app_push.fcm_service_account is not a service account key: {exc}.",
                    code="invalid_service_account",
                ) from None
            project = account["project_id"]
            account_sealed = keys.seal(text, sealing_context(workspace_id, FCM_SERVICE_ACCOUNT))
    apns_sealed = current.apns_private_key_sealed
    if given.apns_private_key is not None:
        pem = given.apns_private_key.strip()
        apns_sealed = None
        if pem:
            try:
                load_key(pem)
            except ValueError as exc:
                raise InvalidInput(
                    f"app_push.apns_private_key is not a .p8 key: {exc}.", code="invalid_apns_key"
                ) from None
            apns_sealed = keys.seal(pem, sealing_context(workspace_id, APNS_KEY))
    if apns_sealed and not (given.apns_team_id and given.apns_key_id and given.apns_topic):
        raise InvalidInput(
            "APNs needs app_push.apns_team_id, apns_key_id and apns_topic (the bundle id) with the key.",
            code="apns_incomplete",
        )
    return AppPushSettings(
        fcm_project_id=project,
        fcm_service_account_sealed=account_sealed,
        apns_team_id=given.apns_team_id,
        apns_key_id=given.apns_key_id,
        apns_topic=given.apns_topic,
        apns_sandbox=given.apns_sandbox,
        apns_private_key_sealed=apns_sealed,
    )


def _check_send_windows(windows: Mapping[Channel, SendWindow]) -> None:
    """A window whose end equals its start reads as "all day" to some and "never" to others: it is refused.

    A window may cross midnight (22:00-06:00); any time is said by leaving the channel out (or 00:00-24:00).
    """
    for channel, window in sorted(windows.items()):
        if window.start == window.end:
            raise InvalidInput(
                f"send_windows.{channel}: start and end are both {window.start}, which is ambiguous. To send at any "
                "time, leave the channel out of send_windows (or give 00:00 to 24:00); a window may cross "
                "midnight (e.g. 22:00 to 06:00).",
                code="invalid_send_window",
            )
