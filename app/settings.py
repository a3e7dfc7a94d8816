"""One typed, frozen settings object, built once from the environment and passed in.

Nothing else in the service reads ``os.environ``. Every variable is listed in ``ENVIRONMENT`` (and a test checks
that the README documents each one).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import msgspec

SmtpTls = Literal["none", "starttls", "tls"]
LogFormat = Literal["auto", "json", "console"]

#: Every environment variable the service reads, with a one-line description (the README table mirrors it).
ENVIRONMENT: dict[str, str] = {
    "DATABASE_URL": "PostgreSQL URL (>= 15). Unset: an embedded PostgreSQL runs in CONSENT_DATA_DIR.",
    "CONSENT_DATA_DIR": "Folder for the embedded database, generated dev secrets and the dev outbox.",
    "PUBLIC_BASE_URL": "Base URL the world reaches the service on; used in mail links and Twilio signatures.",
    "CONSENT_SECRET_KEY": "Base64 or hex, >= 32 bytes. Token, HMAC and encryption keys are derived from it.",
    "SMTP_HOST": "SMTP relay host. Unset: the dev mail adapter writes .eml files to the outbox folder.",
    "SMTP_PORT": "SMTP port (default by SMTP_TLS: 25 none, 587 starttls, 465 tls).",
    "SMTP_USERNAME": "SMTP user name (optional).",
    "SMTP_PASSWORD": "SMTP password (optional).",
    "SMTP_TLS": "none | starttls | tls.",
    "MAIL_FROM": "Default sender address of confirmation mails.",
    "TWILIO_ACCOUNT_SID": "Default Twilio account for every workspace (a workspace may override it).",
    "TWILIO_AUTH_TOKEN": "Default Twilio auth token: signs inbound webhooks (a workspace may override it).",
    "TWILIO_API_BASE_URL": "Twilio REST API base URL (default https://api.twilio.com; a regional edge or a stand-in).",
    "FCM_API_BASE_URL": "Firebase Cloud Messaging API base URL (default https://fcm.googleapis.com).",
    "APNS_API_BASE_URL": "APNs base URL override (default by workspace: api.push.apple.com or the sandbox).",
    "CONSENT_DISPATCHER": "on (default): consent serve also runs a dispatcher; off: only consent worker sends.",
    "CONSENT_DEV_OUTBOX": "on: a channel without provider credentials writes to the outbox folder (development); "
    "off: such a delivery fails, saying which provider is missing. Default: on without DATABASE_URL, else off.",
    "CONSENT_WEBHOOKS_ALLOW_HTTP": "on: webhook URLs may be plain http to the loopback (local dev); off (default).",
    "CONSENT_WEBHOOKS_ALLOW_PRIVATE": "on: tenant and browser URLs (webhooks, print house, token URIs, web push) "
    "may go to private and loopback addresses; off: public only.",
    "CONSENT_OUTBOX_RETENTION_DAYS": "Days outbox files and print batch files are kept (default 30).",
    "CONSENT_WEB_PUSH_SERVICES": "Host names a web push endpoint may have, comma-separated ('*.example.com' for "
    "any name below); '*': any public host. Default: the push services of Chrome, Firefox, Edge and Safari.",
    "METRICS_TOKEN": "If set, GET /metrics requires 'Authorization: Bearer <token>'.",
    "PROMETHEUS_MULTIPROC_DIR": "Folder where the processes of consent serve --workers N keep their metrics, added "
    "up by /metrics (set by consent serve; default <CONSENT_DATA_DIR>/metrics).",
    "CONSENT_LOG_LEVEL": "debug | info | warning | error.",
    "CONSENT_LOG_FORMAT": "auto (pretty on a terminal, JSON otherwise) | json | console.",
    "CONSENT_DB_POOL_SIZE": "Connections per process in the database pool.",
    "CONSENT_STREAMS_MAX": "Audience and audit-event streams one process runs at a time, on a database pool of their "
    "own (default 4); one more is answered 503 with Retry-After.",
    "CONSENT_STREAMS_PER_KEY": "Streams one API key may have open at a time per process (default 2); one more: 429.",
    "CONSENT_STREAMS_PER_WORKSPACE": "Streams one workspace (all its keys) may have open at a time per process "
    "(default 2, below CONSENT_STREAMS_MAX so no tenant takes every stream); one more: 429.",
    "CONSENT_STREAM_SEND_TIMEOUT": "Seconds a stream waits for a client that stopped reading before cutting it off "
    "and freeing its database connection (default 30).",
    "CONSENT_PURPOSES_MAX": "Purposes one workspace may have (default 100); one more: 409 too_many_purposes. "
    "Every purpose costs an audience count in each 15-minute report snapshot.",
    "CONSENT_IMPORT_MAX_BYTES": "Largest body of one import request (bytes, or with K, M, G: binary units); "
    "default 1G. Beyond it: 413.",
}


_MIN_SECRET_BYTES = 32
#: An import body's limit by default: a migration of about two million consents with their proof as NDJSON
#: (about 400 bytes a line), or a Robinson list ten times the German one. A larger file is split; importing is
#: idempotent, so parts may overlap or be sent again.
DEFAULT_IMPORT_MAX_BYTES = 1 << 30
#: Purposes per workspace by default, and the most ``CONSENT_PURPOSES_MAX`` may allow.
DEFAULT_PURPOSES_MAX = 100
MAX_PURPOSES_MAX = 10_000

KNOWN_PUSH_SERVICES = (
    "fcm.googleapis.com",  # Chrome, Edge on Android, Opera, Samsung Internet, Brave (Firebase Cloud Messaging)
    "android.googleapis.com",  # older Chrome subscriptions (GCM endpoints, still delivered through FCM)
    "*.push.services.mozilla.com",  # Firefox (autopush: updates.push.services.mozilla.com)
    "*.notify.windows.com",  # Edge on Windows (WNS: wns2-*.notify.windows.com)
    "*.push.apple.com",  # Safari on macOS and iOS (web.push.apple.com)
)
"""The push services browsers subscribe with: a web push endpoint's host must match one (``*.`` matches any
subdomain). The operator can replace the list (``CONSENT_WEB_PUSH_SERVICES``) or lift it (``*``)."""


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


class DatabaseSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the data lives."""

    url: str | None = None
    """SQLAlchemy URL (``postgresql+asyncpg://…``); ``None`` means the embedded PostgreSQL."""
    pool_size: int = 10
    """Connections kept per process."""
    auto_migrate: bool = False
    """Apply migrations to head on start-up (always true for the embedded database)."""


class StreamSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Limits on the streams (audiences, audit events), which hold a database connection while the client reads."""

    total: int = 4
    """Streams at a time per process: the size of their own connection pool."""
    per_key: int = 2
    """Streams at a time of one API key (per process)."""
    per_workspace: int = 2
    """Streams at a time of one workspace, all its keys together (per process): one tenant never takes them all."""
    send_timeout: float = 30.0
    """Seconds a client may take to accept the next piece of a stream before it is cut off."""


class MailSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The SMTP relay confirmation and marketing mail goes through."""

    host: str | None = None
    """Relay host; ``None`` selects the dev adapter writing ``.eml`` files."""
    port: int = 587
    """Relay port."""
    username: str | None = None
    """Login, if the relay wants one."""
    password: str | None = None
    """Password for ``username``."""
    tls: SmtpTls = "starttls"
    """Transport security: plain, STARTTLS upgrade, or implicit TLS."""
    mail_from: str = "Consent Service <no-reply@localhost>"
    """Default ``From`` of confirmation mails."""


class TwilioDefaults(msgspec.Struct, frozen=True, kw_only=True):
    """Defaults for every workspace; a workspace may carry its own."""

    account_sid: str | None = None
    """Account SID (``AC…``)."""
    auth_token: str | None = None
    """Auth token; also the key of ``X-Twilio-Signature``."""
    api_base_url: str | None = None
    """REST API base URL; ``None`` is Twilio's own."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service is configured with."""

    data_dir: Path = Path(".consent")
    """Embedded database, generated dev secrets and the dev outbox live here."""
    public_base_url: str = "http://127.0.0.1:8000"
    """The URL the world reaches the service on (no trailing slash)."""
    public_base_url_configured: bool = False
    """Whether ``PUBLIC_BASE_URL`` was set (``consent serve`` otherwise derives it from host and port)."""
    secret_key: bytes | None = None
    """Root secret; ``None`` is allowed only for tooling that never serves (OpenAPI export)."""
    metrics_token: str | None = None
    """Bearer token protecting ``/metrics`` when set."""
    metrics_multiprocess_dir: Path | None = None
    """Where several server processes keep their metrics (Prometheus multiprocess mode); ``None``: one process."""
    log_level: str = "info"
    """Minimum log level."""
    log_format: LogFormat = "auto"
    """Log rendering."""
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    """Database connection."""
    mail: MailSettings = msgspec.field(default_factory=MailSettings)
    """SMTP relay."""
    streams: StreamSettings = msgspec.field(default_factory=StreamSettings)
    """Limits on the streams."""
    twilio: TwilioDefaults = msgspec.field(default_factory=TwilioDefaults)
    """Twilio defaults."""
    dispatcher: bool = True
    """Whether ``consent serve`` runs a dispatcher (and a webhook sender) in-process."""
    dev_outbox: bool = True
    """Whether a channel without provider credentials writes to the outbox folder (development) instead of failing."""
    webhooks_allow_http: bool = False
    """Whether webhook URLs may use plain http to the loopback (local development)."""
    webhooks_allow_private: bool = False
    """Whether webhooks may go to private, loopback and link-local addresses (receivers inside the network)."""
    outbox_retention_days: int = 30
    """Days files in the outbox folder (dev outbox, print batches) are kept before the sweep deletes them."""
    web_push_services: tuple[str, ...] | None = KNOWN_PUSH_SERVICES
    """Host patterns a web push endpoint must match (browsers choose endpoints); ``None``: any public host."""
    fcm_api_base_url: str = "https://fcm.googleapis.com"
    """FCM HTTP v1 base URL."""
    apns_api_base_url: str | None = None
    """APNs base URL override; ``None`` picks production or sandbox per workspace."""
    import_max_bytes: int = DEFAULT_IMPORT_MAX_BYTES
    """Largest body of one ``POST /v1/imports/…`` request; counted as it streams, never buffered (413 beyond)."""
    purposes_max: int = DEFAULT_PURPOSES_MAX
    """Purposes one workspace may have: each costs an audience count in every report snapshot (409 beyond)."""

    @property
    def embedded_database(self) -> bool:
        """True when the service runs its own PostgreSQL in ``data_dir``."""
        return self.database.url is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from ``environ`` (default: the process environment)."""
        env = dict(os.environ if environ is None else environ)

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        tls = (get("SMTP_TLS") or "starttls").lower()
        if tls not in ("none", "starttls", "tls"):
            raise SettingsError(f"SMTP_TLS must be one of none, starttls, tls (got {tls!r})")
        default_port = {"none": 25, "starttls": 587, "tls": 465}[tls]
        log_format = (get("CONSENT_LOG_FORMAT") or "auto").lower()
        if log_format not in ("auto", "json", "console"):
            raise SettingsError(f"CONSENT_LOG_FORMAT must be auto, json or console (got {log_format!r})")
        log_level = (get("CONSENT_LOG_LEVEL") or "info").lower()
        if log_level not in ("debug", "info", "warning", "error"):
            raise SettingsError(f"CONSENT_LOG_LEVEL must be debug, info, warning or error (got {log_level!r})")
        secret = get("CONSENT_SECRET_KEY")
        twilio_api = get("TWILIO_API_BASE_URL")
        apns_api = get("APNS_API_BASE_URL")
        return cls(
            data_dir=Path(get("CONSENT_DATA_DIR") or ".consent"),
            public_base_url=_base_url(get("PUBLIC_BASE_URL") or "http://127.0.0.1:8000"),
            public_base_url_configured=get("PUBLIC_BASE_URL") is not None,
            secret_key=parse_secret_key(secret) if secret else None,
            metrics_token=get("METRICS_TOKEN"),
            metrics_multiprocess_dir=Path(multiproc) if (multiproc := get("PROMETHEUS_MULTIPROC_DIR")) else None,
            log_level=log_level,
            log_format=log_format,  # type: ignore[arg-type]  # checked against the Literal above
            database=DatabaseSettings(
                url=_database_url(get("DATABASE_URL")),
                pool_size=_int(get("CONSENT_DB_POOL_SIZE"), "CONSENT_DB_POOL_SIZE", 10, 1, 500),
            ),
            streams=StreamSettings(
                total=_int(get("CONSENT_STREAMS_MAX"), "CONSENT_STREAMS_MAX", 4, 1, 100),
                per_key=_int(get("CONSENT_STREAMS_PER_KEY"), "CONSENT_STREAMS_PER_KEY", 2, 1, 100),
                per_workspace=_int(get("CONSENT_STREAMS_PER_WORKSPACE"), "CONSENT_STREAMS_PER_WORKSPACE", 2, 1, 100),
                send_timeout=_int(get("CONSENT_STREAM_SEND_TIMEOUT"), "CONSENT_STREAM_SEND_TIMEOUT", 30, 1, 3600),
            ),
            mail=MailSettings(
                host=get("SMTP_HOST"),
                port=_int(get("SMTP_PORT"), "SMTP_PORT", default_port, 1, 65535),
                username=get("SMTP_USERNAME"),
                password=get("SMTP_PASSWORD"),
                tls=tls,  # type: ignore[arg-type]  # checked against the Literal above
                mail_from=get("MAIL_FROM") or "Consent Service <no-reply@localhost>",
            ),
            twilio=TwilioDefaults(
                account_sid=get("TWILIO_ACCOUNT_SID"),
                auth_token=get("TWILIO_AUTH_TOKEN"),
                api_base_url=_base_url(twilio_api, "TWILIO_API_BASE_URL") if twilio_api else None,
            ),
            dispatcher=_switch(get("CONSENT_DISPATCHER"), "CONSENT_DISPATCHER"),
            # the embedded database is the development set-up; with a real one, a missing provider is an error
            dev_outbox=_switch(
                get("CONSENT_DEV_OUTBOX") or ("off" if get("DATABASE_URL") else "on"), "CONSENT_DEV_OUTBOX"
            ),
            webhooks_allow_http=_switch(get("CONSENT_WEBHOOKS_ALLOW_HTTP") or "off", "CONSENT_WEBHOOKS_ALLOW_HTTP"),
            webhooks_allow_private=_switch(
                get("CONSENT_WEBHOOKS_ALLOW_PRIVATE") or "off", "CONSENT_WEBHOOKS_ALLOW_PRIVATE"
            ),
            outbox_retention_days=_int(
                get("CONSENT_OUTBOX_RETENTION_DAYS"), "CONSENT_OUTBOX_RETENTION_DAYS", 30, 1, 3650
            ),
            web_push_services=_host_patterns(get("CONSENT_WEB_PUSH_SERVICES"), "CONSENT_WEB_PUSH_SERVICES"),
            fcm_api_base_url=_base_url(get("FCM_API_BASE_URL") or "https://fcm.googleapis.com", "FCM_API_BASE_URL"),
            apns_api_base_url=_base_url(apns_api, "APNS_API_BASE_URL") if apns_api else None,
            import_max_bytes=_bytes(get("CONSENT_IMPORT_MAX_BYTES"), "CONSENT_IMPORT_MAX_BYTES"),
            purposes_max=_int(
                get("CONSENT_PURPOSES_MAX"), "CONSENT_PURPOSES_MAX", DEFAULT_PURPOSES_MAX, 1, MAX_PURPOSES_MAX
            ),
        )

    @staticmethod
    def base_url(value: str) -> str:
        """A base URL as ``PUBLIC_BASE_URL`` takes it (http or https, no trailing slash), or :class:`SettingsError`."""
        return _base_url(value, "--base-url")

    def export_for_workers(self, database_url: str, metrics_dir: Path) -> None:
        """Put these settings where the processes of ``consent serve --workers N`` read them: the environment.

        What the supervisor decided (the embedded database's URL, a generated dev secret, the public URL made of
        host and port) is written over what the environment said; the workers' :meth:`from_env` reads it back.
        """
        assert self.secret_key is not None
        os.environ.update(
            {
                "DATABASE_URL": database_url,
                "CONSENT_SECRET_KEY": self.secret_key.hex(),
                "PUBLIC_BASE_URL": self.public_base_url,
                "CONSENT_DATA_DIR": str(self.data_dir),
                "CONSENT_DEV_OUTBOX": "on" if self.dev_outbox else "off",
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            }
        )

    def with_dev_secrets(self) -> Settings:
        """Fill a missing secret key from ``<data_dir>/secret_key``, generating it on first use."""
        if self.secret_key is not None:
            return self
        path = self.data_dir / "secret_key"
        if path.exists():
            key = parse_secret_key(path.read_text().strip())
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            key = secrets.token_bytes(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(key).decode() + "\n")
        return msgspec.structs.replace(self, secret_key=key)


def parse_secret_key(value: str) -> bytes:
    """Decode ``CONSENT_SECRET_KEY`` (hex or base64, at least 32 bytes)."""
    raw: bytes | None
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        # Standard and URL-safe alphabets alike; padding optional.
        standard = value.replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) < _MIN_SECRET_BYTES:
        raise SettingsError("CONSENT_SECRET_KEY must be at least 32 random bytes, hex or base64 encoded")
    return raw


def _int(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number (got {value!r})") from None
    if not low <= number <= high:
        raise SettingsError(f"{name} must be between {low} and {high} (got {number})")
    return number


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _bytes(value: str | None, name: str) -> int:
    """A size in bytes: ``1073741824``, ``1G``, ``512M``, ``512MiB`` (binary units; 1 KiB to 1 TiB)."""
    if value is None:
        return DEFAULT_IMPORT_MAX_BYTES
    text = value.upper().removesuffix("B").removesuffix("I").strip()
    unit = text[-1:] if text[-1:] in _UNITS else ""
    digits = text.removesuffix(unit).strip()
    if not digits.isdigit() or not digits.isascii():
        raise SettingsError(f"{name} must be a size in bytes, optionally with K, M or G (got {value!r})")
    number = int(digits) * _UNITS[unit]
    if not 1 << 10 <= number <= 1 << 40:
        raise SettingsError(f"{name} must be between 1K and 1024G (got {value!r})")
    return number


def _base_url(value: str, name: str = "PUBLIC_BASE_URL") -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name} must be an absolute http(s) URL (got {value!r})")
    if parts.query or parts.fragment:
        raise SettingsError(f"{name} must not carry a query or fragment")
    return value.rstrip("/")


def _switch(value: str | None, name: str) -> bool:
    if value is None:
        return True
    if value.lower() in ("on", "true", "1", "yes"):
        return True
    if value.lower() in ("off", "false", "0", "no"):
        return False
    raise SettingsError(f"{name} must be on or off (got {value!r})")


_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")


def _host_patterns(value: str | None, name: str) -> tuple[str, ...] | None:
    """A comma-separated list of host names (``*.`` for any name below one); ``*`` alone: no list."""
    if value is None or not value.strip():
        return KNOWN_PUSH_SERVICES
    if value.strip() == "*":
        return None
    patterns = tuple(p.strip().lower().rstrip(".") for p in value.split(",") if p.strip())
    for pattern in patterns:
        if not _HOST_PATTERN.fullmatch(pattern):
            raise SettingsError(f"{name}: {pattern!r} is not a host name or '*.domain' pattern")
    return patterns


def _database_url(value: str | None) -> str | None:
    """Accept the usual ``postgres://`` / ``postgresql://`` spellings and select the asyncpg driver."""
    if value is None:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("postgres", "postgresql", "postgresql+asyncpg"):
        raise SettingsError("DATABASE_URL must be a postgresql:// URL")
    return f"postgresql+asyncpg://{rest}"
