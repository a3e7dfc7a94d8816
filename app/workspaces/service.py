"""Workspace and API-key operations (used by the API and the CLI)."""

from __future__ import annotations

import re
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.model import Channel
from app.lib import vapid
from app.lib.auth import Scope, generate_key
from app.lib.errors import Conflict, InvalidInput, NotFound
from app.lib.keys import Keys
from app.lib.orm import utcnow
from app.purposes import service as purposes
from app.settings import MailSettings
from app.workspaces import repository
from app.workspaces.models import ApiKey, Workspace
from app.workspaces.schemas import WorkspaceSettingsIn
from app.workspaces.senders import allowed_mail_domains, mail_domain, normalise_domain, sender_identities
from app.workspaces.settings import (
    AppPushSettings,
    EmailSettings,
    PrintHouseSettings,
    SendWindow,
    TwilioSettings,
    WebPushSettings,
    WorkspaceSettings,
    branding_problem,
    known_time_zone,
    template_problem,
)
from channel_providers.apns import load_key
from channel_providers.fcm import ServiceAccountError, parse_service_account


async def create_workspace(session: AsyncSession, name: str) -> Workspace:
    """Create a workspace (the caller commits)."""
    return await repository.add_workspace(session, name)


async def create_api_key(
    session: AsyncSession, workspace_id: uuid.UUID, name: str, scopes: Iterable[Scope]
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the secret, which is not stored and cannot be shown again."""
    scopes = [Scope(scope) for scope in scopes]
    if Scope.OPERATOR in scopes:
        raise InvalidInput(
            "A workspace's key cannot carry the operator scope: operator keys are made with "
            "'consent apikey create --operator' and belong to no workspace.",
            code="operator_scope_not_allowed",
        )
    workspace = await repository.get_workspace(session, workspace_id)
    if workspace is None or workspace.deleted_at is not None:
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


TWILIO_AUTH_TOKEN = "twilio_auth_token"  # noqa: S105  # a field name, not a secret
EMAIL_WEBHOOK_SECRET = "email_webhook_secret"  # noqa: S105  # a field name, not a secret
VAPID_KEY = "vapid_private_key"
FCM_SERVICE_ACCOUNT = "fcm_service_account"
APNS_KEY = "apns_private_key"
PRINT_HOUSE_TOKEN = "print_house_token"  # noqa: S105  # a field name, not a secret
_MIN_WEBHOOK_SECRET = 32


async def settings_of(session: AsyncSession, workspace_id: uuid.UUID) -> WorkspaceSettings:
    """The workspace's settings (defaults where unset)."""
    _, settings = await name_and_settings(session, workspace_id)
    return settings


async def replace_settings(
    session: AsyncSession, keys: Keys, workspace_id: uuid.UUID, new: WorkspaceSettingsIn, *, mail: MailSettings
) -> WorkspaceSettings:
    """Validate and store the settings; purposes they name must exist; the token is sealed, or kept if omitted.

    The sender numbers and Messaging Service are claimed for this workspace in the same transaction (``409
    sender_taken`` if another workspace holds one; the ones no longer named are released); ``email.from_address``
    must be on a domain the operator allows this workspace (``mail`` is the service's relay and ``MAIL_FROM``).
    """
    _check_send_windows(new.send_windows)
    _check_texts(new)
    await _check_time_zone_in_database(session, new.timezone)
    workspace = await repository.lock_workspace(session, workspace_id)  # against the operator's list changing
    if workspace is None:
        raise NotFound("No such workspace.", code="workspace_not_found")
    _check_from_address(new.email.from_address, allowed_mail_domains(workspace.mail_domains, mail))
    current = WorkspaceSettings.load(workspace.settings)
    named = {*new.phone.start_words.values(), *([new.phone.default_purpose] if new.phone.default_purpose else [])}
    named |= {new.tracking_purpose} if new.tracking_purpose else set()
    for key in sorted(named):
        if await purposes.find_purpose(session, workspace_id, key) is None:
            raise InvalidInput(
                f"The settings name the purpose '{key}', which does not exist.", code="purpose_not_found"
            )
    sealed = _write_only(keys, workspace_id, TWILIO_AUTH_TOKEN, current.twilio.auth_token_sealed, new.twilio.auth_token)
    email_secret = _write_only(
        keys,
        workspace_id,
        EMAIL_WEBHOOK_SECRET,
        current.email.webhook_secret_sealed,
        new.email.webhook_secret,
        prepare=_long_webhook_secret,
    )
    given = msgspec.to_builtins(new.email)
    given.pop("webhook_secret", None)
    given.pop("webhook_secret_set", None)
    email = msgspec.convert({**given, "webhook_secret_sealed": email_secret}, EmailSettings)
    web_push = WebPushSettings(
        subject=new.web_push.subject,
        vapid_public_key=current.web_push.vapid_public_key,
        vapid_private_key_sealed=current.web_push.vapid_private_key_sealed,
    )
    if new.web_push.vapid_private_key:  # an empty key keeps the pair: the browsers' subscriptions are bound to it
        private = _vapid_key(new.web_push.vapid_private_key)
        web_push = msgspec.structs.replace(
            web_push,
            vapid_public_key=vapid.public_of(private),
            vapid_private_key_sealed=_write_only(
                keys, workspace_id, VAPID_KEY, None, new.web_push.vapid_private_key, prepare=_raw_vapid_key
            ),
        )
    app_push = _app_push(keys, workspace_id, current.app_push, new)
    print_token = _write_only(
        keys, workspace_id, PRINT_HOUSE_TOKEN, current.print_house.token_sealed, new.print_house.token
    )
    print_house = PrintHouseSettings(url=new.print_house.url, token_sealed=print_token)
    settings = WorkspaceSettings(
        brand=new.brand,
        branding=new.branding,
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
        erasure_review=new.erasure_review,
        preference_origins=new.preference_origins,
        tracking_purpose=new.tracking_purpose,
        tracking_pixel=new.tracking_pixel,
    )
    await _claim_senders(session, workspace_id, new)
    await repository.save_settings(session, workspace_id, settings.dump())
    return settings


async def _claim_senders(session: AsyncSession, workspace_id: uuid.UUID, new: WorkspaceSettingsIn) -> None:
    """Claim the senders the settings name; which workspace holds a taken one is not said (tenants are apart)."""
    fields = {"phone.sms_from": new.phone.sms_from, "phone.whatsapp_from": new.phone.whatsapp_from}
    taken = await repository.claim_senders(
        session, workspace_id, sender_identities(fields.values(), new.default_region)
    )
    if taken:
        errors = [
            {"field": field, "message": "is in use by another workspace"}
            for field, value in fields.items()
            if sender_identities([value], new.default_region) & taken
        ]
        names = " and ".join(e["field"] for e in errors)
        raise Conflict(
            f"{names}: this sender is in use by another workspace. A number or Messaging Service belongs to one "
            "workspace only; ask the operator if it should be yours.",
            code="sender_taken",
            extra={"errors": errors},
        )


def _check_from_address(address: str | None, allowed: frozenset[str] | None) -> None:
    """A tenant's own sender address must be on a domain the operator allows it (else it could send as anyone)."""
    if address is None:
        return
    domain = mail_domain(address)
    if domain is None:
        raise _invalid(
            "email.from_address", "is not a mail address (e.g. Acme <news@acme.example>)", "invalid_from_address"
        )
    if allowed is not None and domain not in allowed:
        listed = ", ".join(sorted(allowed)) or "none"
        raise _invalid(
            "email.from_address",
            f"is on the domain {domain}, which this workspace may not send from (allowed: {listed}; the operator "
            "of this service can allow more)",
            "from_domain_not_allowed",
        )


async def owns_sender(
    session: AsyncSession, workspace_id: uuid.UUID, senders: Iterable[str | None], region: str
) -> bool:
    """Whether one of ``senders`` (numbers or a Messaging Service SID, as Twilio writes them) is the workspace's."""
    return await repository.owns_sender(session, workspace_id, sender_identities(senders, region))


async def mail_domains(session: AsyncSession, workspace_id: uuid.UUID) -> list[str] | None:
    """The operator's list of the workspace's mail domains (``None``: not set, the default applies)."""
    workspace = await repository.get_workspace(session, workspace_id)
    if workspace is None:
        raise NotFound(f"Workspace {workspace_id} does not exist.", code="workspace_not_found")
    return workspace.mail_domains


async def change_mail_domains(
    session: AsyncSession, workspace_id: uuid.UUID, *, add: Iterable[str] = (), remove: Iterable[str] = ()
) -> tuple[list[str] | None, bool]:
    """Add and remove domains of the operator's list (the operator's, never the tenant's: CLI only).

    Returns the new list (``None`` when empty: the default applies again) and whether the workspace's
    ``from_address`` was on a removed domain and was cleared (its mail then goes out from ``MAIL_FROM``): a
    domain the operator withdrew is not sent from again.
    """
    try:
        added = {normalise_domain(d) for d in add}
        removed = {normalise_domain(d) for d in remove}
    except ValueError as exc:
        raise InvalidInput(f"{exc}.", code="invalid_domain") from None
    workspace = await repository.lock_workspace(session, workspace_id)
    if workspace is None:
        raise NotFound(f"Workspace {workspace_id} does not exist.", code="workspace_not_found")
    domains = sorted((set(workspace.mail_domains or ()) | added) - removed) or None
    await repository.set_mail_domains(session, workspace_id, domains)
    settings = WorkspaceSettings.load(workspace.settings)
    address = settings.email.from_address
    cleared = bool(address and removed and mail_domain(address) in removed)
    if cleared:
        email = msgspec.structs.replace(settings.email, from_address=None)
        await repository.save_settings(session, workspace_id, msgspec.structs.replace(settings, email=email).dump())
    return domains, cleared


def _app_push(
    keys: Keys, workspace_id: uuid.UUID, current: AppPushSettings, new: WorkspaceSettingsIn
) -> AppPushSettings:
    """FCM service account and APNs key: validated and sealed when given (an empty string removes one)."""
    given = new.app_push
    account_sealed = _write_only(
        keys,
        workspace_id,
        FCM_SERVICE_ACCOUNT,
        current.fcm_service_account_sealed,
        given.fcm_service_account,
        prepare=_service_account,
    )
    project = current.fcm_project_id
    if given.fcm_service_account is not None:  # replaced or removed: the project is the new account's
        project = parse_service_account(given.fcm_service_account.strip())["project_id"] if account_sealed else None
    apns_sealed = _write_only(
        keys, workspace_id, APNS_KEY, current.apns_private_key_sealed, given.apns_private_key, prepare=_apns_key
    )
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


async def settings_and_sender(
    session: AsyncSession, workspace_id: uuid.UUID, senders: Iterable[str | None]
) -> tuple[str, WorkspaceSettings, bool]:
    """:func:`name_and_settings` and :func:`owns_sender` in one statement (an inbound webhook's reads).

    The senders' identities depend on the workspace's region only for a number in national format (Twilio writes
    E.164): they are taken with the default region and, where the workspace's region reads them otherwise, the
    ownership is read again with its own.
    """
    senders = list(senders)
    guessed = sender_identities(senders, _DEFAULT_REGION)
    found = await repository.name_settings_and_sender(session, workspace_id, guessed)
    if found is None:
        raise NotFound("No such workspace.", code="workspace_not_found")
    name, stored, owned = found
    settings = WorkspaceSettings.load(stored)
    if settings.default_region != _DEFAULT_REGION:
        identities = sender_identities(senders, settings.default_region)
        if identities != guessed:
            owned = await repository.owns_sender(session, workspace_id, identities)
    return name, settings, owned


#: The region a workspace's settings default to (:func:`settings_and_sender` reads senders with it first).
_DEFAULT_REGION = WorkspaceSettings().default_region


async def name_and_settings(session: AsyncSession, workspace_id: uuid.UUID) -> tuple[str, WorkspaceSettings]:
    """The workspace's name and settings (defaults where unset)."""
    workspace = await repository.get_workspace(session, workspace_id)
    if workspace is None:
        raise NotFound("No such workspace.", code="workspace_not_found")
    return workspace.name, WorkspaceSettings.load(workspace.settings)


def _write_only(
    keys: Keys,
    workspace_id: uuid.UUID,
    name: str,
    current: str | None,
    given: str | None,
    *,
    prepare: Callable[[str], str] | None = None,
) -> str | None:
    """The sealed value of a write-only secret after an update of the settings.

    Omitted (``None``) keeps the stored secret, an empty string removes it, any other value is checked (and
    brought into its stored form) by ``prepare``, then sealed to this workspace and field. Secrets are never
    answered back; the settings say only whether one is set.
    """
    if given is None:
        return current
    value = given.strip()
    if not value:
        return None
    return keys.seal(prepare(value) if prepare else value, sealing_context(workspace_id, name))


def _long_webhook_secret(secret: str) -> str:
    if len(secret) < _MIN_WEBHOOK_SECRET:
        raise InvalidInput(
            "email.webhook_secret must be at least 32 characters (use a random value).",
            code="webhook_secret_too_short",
        )
    return secret


def _vapid_key(pem: str) -> ec.EllipticCurvePrivateKey:
    try:
        return vapid.load_private(pem.strip())
    except ValueError as exc:
        raise InvalidInput(f"web_push.vapid_private_key is not a P-256 key: {exc}.", code="invalid_vapid_key") from None


def _raw_vapid_key(pem: str) -> str:
    return vapid.raw_private(_vapid_key(pem))


def _service_account(text: str) -> str:
    try:
        parse_service_account(text)
    except (ServiceAccountError, ValueError) as exc:
        raise InvalidInput(
            f"app_push.fcm_service_account is not a service account key: {exc}.", code="invalid_service_account"
        ) from None
    return text


def _apns_key(pem: str) -> str:
    try:
        load_key(pem)
    except ValueError as exc:
        raise InvalidInput(f"app_push.apns_private_key is not a .p8 key: {exc}.", code="invalid_apns_key") from None
    return pem


async def settings_by_workspace(
    session: AsyncSession, workspace_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, WorkspaceSettings]:
    """The settings (defaults where unset) of each of the workspaces that exist, by id."""
    rows = await repository.workspaces_by_id(session, list(workspace_ids))
    return {workspace.id: WorkspaceSettings.load(workspace.settings) for workspace in rows}


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


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _invalid(field: str, message: str, code: str) -> InvalidInput:
    return InvalidInput(f"{field} {message}.", code=code, extra={"errors": [{"field": field, "message": message}]})


async def _check_time_zone_in_database(session: AsyncSession, name: str) -> None:
    """The database computes every consent end on the workspace's wall clock: it must read the zone as Python does.

    Refused: a name the database does not know (``localtime``: a file on this machine, not a zone; it would make
    every read of the workspace's ends fail), and a name the database reads as a fixed abbreviation although the
    zone keeps summer time (``CET``, ``EET``, ``MET``, ``WET``: PostgreSQL reads abbreviations first, an hour off
    in summer). Fixed zones whose abbreviation means the same (``UTC``, ``EST``) pass (hostile review 2026-12-05).
    """
    found = await repository.database_time_zone(session, name)
    if not found.known:
        raise _invalid(
            "timezone",
            f"is not a time zone the database knows (got {name[:64]!r}); use one such as Europe/Berlin",
            "invalid_timezone",
        )
    if found.fixed_offset is not None:
        zone = ZoneInfo(name)
        year = utcnow().year
        offsets = {zone.utcoffset(datetime(year, month, 15)) for month in (1, 7)}  # noqa: DTZ001  # wall clock
        if offsets != {found.fixed_offset}:
            raise _invalid(
                "timezone",
                f"is read by the database as a fixed abbreviation without summer time (got {name[:64]!r}); "
                "use the region's name, such as Europe/Berlin",
                "invalid_timezone",
            )


def _check_texts(new: WorkspaceSettingsIn) -> None:
    """Refuse what would break later, at send or reply time, rather than at input.

    The time zone must be one the gate can compute with; header-bound fields (brand, senders, addresses) must not
    carry CR/LF or other control characters (a header split at send time fails every retry); reply texts are
    templates with known placeholders only.
    """
    if not known_time_zone(new.timezone):
        raise _invalid(
            "timezone",
            f"is not an IANA time zone such as Europe/Berlin (got {new.timezone[:64]!r})",
            "invalid_timezone",
        )
    single_line = {
        "brand": new.brand,
        "email.from_address": new.email.from_address,
        "email.reply_to": new.email.reply_to,
        "phone.sms_from": new.phone.sms_from,
        "phone.whatsapp_from": new.phone.whatsapp_from,
    }
    for field, value in single_line.items():
        if value is not None and _CONTROL.search(value):
            raise _invalid(field, "must be one line without control characters (CR, LF, tab…)", "invalid_text")
    if (branding := branding_problem(new.branding)) is not None:
        raise _invalid(*branding, "invalid_branding")
    for language, texts in sorted(new.phone.texts.items()):
        for kind in ("opt_in", "help", "stop", "not_subscribed"):
            text = getattr(texts, kind)
            if text is not None and (problem := template_problem(text)) is not None:
                raise _invalid(f"phone.texts.{language}.{kind}", problem, "invalid_reply_text")


async def time_zone_drift(session: AsyncSession, *, months: int = 36) -> dict[str, list[datetime]]:
    """Zones in use that the database reads with another UTC offset than the service, and at which instants.

    Consent ends are the database's alone, but send windows and shown dates are the service's (its pinned
    ``tzdata``): a difference means the two releases differ for that zone (update the server's tz data, or the
    package). Checked on the 1st and 15th of each month from now on, at noon UTC.
    """
    zones = [
        zone for zone in await repository.time_zones_in_use(session, WorkspaceSettings().timezone) if _readable(zone)
    ]
    start = utcnow().replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    instants = []
    for n in range(months):
        year, month = divmod(start.month - 1 + n, 12)
        first = start.replace(year=start.year + year, month=month + 1)
        instants += [first, first.replace(day=15)]
    drift: dict[str, list[datetime]] = {}
    for zone, at, seconds in await repository.database_offsets(session, zones, instants):
        offset = at.astimezone(ZoneInfo(zone)).utcoffset()
        if offset is None or int(offset.total_seconds()) != seconds:
            drift.setdefault(zone, []).append(at)
    return drift


def _readable(zone: str) -> bool:
    """A zone the service itself can read (one stored before the settings checked it may not be)."""
    try:
        ZoneInfo(zone)
    except (ValueError, OSError, zoneinfo.ZoneInfoNotFoundError):
        return False
    return True
