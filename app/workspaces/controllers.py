"""``/v1/api-keys`` and ``/v1/workspace``."""

from __future__ import annotations

import uuid

from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.auth import KeyCache, Principal, Scope
from app.lib.errors import NotFound
from app.lib.keys import Keys
from app.lib.openapi import errors
from app.settings import Settings
from app.workspaces import repository, service
from app.workspaces.models import ApiKey
from app.workspaces.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    AppPushSettingsOut,
    EmailSettingsOut,
    PrintHouseSettingsOut,
    TwilioSettingsOut,
    WebPushSettingsOut,
    WorkspaceOut,
    WorkspaceSettingsIn,
    WorkspaceSettingsOut,
    check_outbound_urls,
)
from app.workspaces.settings import WorkspaceSettings


def _key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        name=key.name,
        scopes=[Scope(s) for s in key.scopes],
        display_prefix=key.display_prefix,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


class ApiKeyController(Controller):
    """Manage the API keys of the caller's workspace (scope ``admin``)."""

    path = "/api-keys"
    tags = ["setup"]  # noqa: RUF012  # Litestar reads class attributes
    opt = {"scope": Scope.ADMIN}  # noqa: RUF012

    # an Idempotency-Key repeat creates no second key and does not get the answer again: it holds the secret,
    # which is stored nowhere
    @post(
        operation_id="createApiKey",
        status_code=201,
        responses=errors(401, 403, 409, 422),
        opt={"answer_holds_secret": True},
    )
    async def create(
        self, data: JSONBody[ApiKeyCreate], principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> ApiKeyCreated:
        """Create an API key; the secret is in this answer only."""
        async with db.begin():
            key, secret = await service.create_api_key(db, principal.workspace_id, data.name, data.scopes)
        out = _key_out(key)
        return ApiKeyCreated(**{f: getattr(out, f) for f in out.__struct_fields__}, secret=secret)

    @get(operation_id="listApiKeys", responses=errors(401, 403))
    async def list_keys(
        self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> list[ApiKeyOut]:
        """All keys of the workspace, revoked ones included."""
        return [_key_out(k) for k in await repository.list_api_keys(db, principal.workspace_id)]

    @delete("/{key_id:uuid}", operation_id="revokeApiKey", status_code=204, responses=errors(401, 403, 404))
    async def revoke(
        self,
        key_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        key_cache: NamedDependency[KeyCache],
    ) -> None:
        """Revoke a key at once; it stays listed with ``revoked_at``."""
        async with db.begin():
            await service.revoke_api_key(db, principal.workspace_id, key_id)
        key_cache.clear()


def _settings_out(settings: WorkspaceSettings) -> WorkspaceSettingsOut:
    return WorkspaceSettingsOut(
        brand=settings.brand,
        branding=settings.branding,
        locale=settings.locale,
        default_region=settings.default_region,
        timezone=settings.timezone,
        phone=settings.phone,
        twilio=TwilioSettingsOut(
            account_sid=settings.twilio.account_sid, auth_token_set=settings.twilio.auth_token_sealed is not None
        ),
        email=EmailSettingsOut(
            from_address=settings.email.from_address,
            reply_to=settings.email.reply_to,
            confirmation_ttl_hours=settings.email.confirmation_ttl_hours,
            address_limit=settings.email.address_limit,
            ip_limit=settings.email.ip_limit,
            scanner_seconds=settings.email.scanner_seconds,
            signup_url=settings.email.signup_url,
            webhook_secret_set=settings.email.webhook_secret_sealed is not None,
        ),
        web_push=WebPushSettingsOut(
            subject=settings.web_push.subject,
            vapid_public_key=settings.web_push.vapid_public_key,
            vapid_private_key_set=settings.web_push.vapid_private_key_sealed is not None,
        ),
        app_push=AppPushSettingsOut(
            fcm_project_id=settings.app_push.fcm_project_id,
            fcm_service_account_set=settings.app_push.fcm_service_account_sealed is not None,
            apns_team_id=settings.app_push.apns_team_id,
            apns_key_id=settings.app_push.apns_key_id,
            apns_topic=settings.app_push.apns_topic,
            apns_sandbox=settings.app_push.apns_sandbox,
            apns_private_key_set=settings.app_push.apns_private_key_sealed is not None,
        ),
        print_house=PrintHouseSettingsOut(
            url=settings.print_house.url, token_set=settings.print_house.token_sealed is not None
        ),
        send_windows=settings.send_windows,
        erasure_review=settings.erasure_review,
        preference_origins=settings.preference_origins,
        tracking_purpose=settings.tracking_purpose,
        tracking_pixel=settings.tracking_pixel,
    )


class WorkspaceController(Controller):
    """The workspace the caller's key belongs to."""

    path = "/workspace"
    tags = ["setup"]  # noqa: RUF012

    @get(operation_id="getWorkspace", responses=errors(401))
    async def current(self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]) -> WorkspaceOut:
        """The caller's workspace (any valid key)."""
        workspace = await repository.get_workspace(db, principal.workspace_id)
        if workspace is None:  # pragma: no cover - keys cascade with their workspace
            raise NotFound("Workspace not found.")
        return WorkspaceOut(id=workspace.id, name=workspace.name, created_at=workspace.created_at)

    @get("/settings", operation_id="getWorkspaceSettings", responses=errors(401, 403), opt={"scope": Scope.ADMIN})
    async def get_settings(
        self, principal: NamedDependency[Principal], db: NamedDependency[AsyncSession]
    ) -> WorkspaceSettingsOut:
        """The settings in force (the Twilio auth token is never shown)."""
        return _settings_out(await service.settings_of(db, principal.workspace_id))

    @put(
        "/settings",
        operation_id="replaceWorkspaceSettings",
        responses=errors(401, 403, 409, 422),
        opt={"scope": Scope.ADMIN},
    )
    async def put_settings(
        self,
        data: JSONBody[WorkspaceSettingsIn],
        principal: NamedDependency[Principal],
        db: NamedDependency[AsyncSession],
        keys: NamedDependency[Keys],
        settings: NamedDependency[Settings],
    ) -> WorkspaceSettingsOut:
        """Replace the settings: locale, phone region, brand, SMS/WhatsApp keywords and replies, Twilio account.

        A sender number or Messaging Service another workspace holds is refused (`409 sender_taken`); the ones no
        longer named are released. `email.from_address` must be on a domain the operator allows this workspace
        (`422 from_domain_not_allowed`).
        """
        await check_outbound_urls(data, allow_private=settings.webhooks_allow_private)
        async with db.begin():
            saved = await service.replace_settings(db, keys, principal.workspace_id, data, mail=settings.mail)
        return _settings_out(saved)
