"""Settings come from the environment only, with clear errors."""

from __future__ import annotations

import base64
import re

import pytest

from app.settings import ENVIRONMENT, KNOWN_PUSH_SERVICES, Settings, SettingsError


def test_defaults_need_no_environment():
    settings = Settings.from_env({})
    assert settings.embedded_database
    assert settings.secret_key is None
    assert settings.mail.tls == "starttls"
    assert settings.mail.port == 587
    assert str(settings.data_dir) == ".consent"
    assert not settings.public_base_url_configured
    assert Settings.from_env({"PUBLIC_BASE_URL": "https://c.example.com"}).public_base_url_configured


def test_database_url_spellings_select_asyncpg():
    for url in ("postgres://u:p@h/db", "postgresql://u:p@h/db", "postgresql+asyncpg://u:p@h/db"):
        assert Settings.from_env({"DATABASE_URL": url}).database.url == "postgresql+asyncpg://u:p@h/db"
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        Settings.from_env({"DATABASE_URL": "mysql://h/db"})


def test_smtp_port_follows_tls_mode_unless_set():
    assert Settings.from_env({"SMTP_TLS": "tls"}).mail.port == 465
    assert Settings.from_env({"SMTP_TLS": "none"}).mail.port == 25
    assert Settings.from_env({"SMTP_TLS": "tls", "SMTP_PORT": "2465"}).mail.port == 2465
    with pytest.raises(SettingsError, match="SMTP_TLS"):
        Settings.from_env({"SMTP_TLS": "ssl"})
    with pytest.raises(SettingsError, match="SMTP_PORT"):
        Settings.from_env({"SMTP_PORT": "smtp"})


def test_secret_key_accepts_hex_and_base64_and_rejects_short_keys():
    raw = bytes(range(32))
    assert Settings.from_env({"CONSENT_SECRET_KEY": raw.hex()}).secret_key == raw
    assert Settings.from_env({"CONSENT_SECRET_KEY": base64.b64encode(raw).decode()}).secret_key == raw
    assert (
        Settings.from_env({"CONSENT_SECRET_KEY": base64.urlsafe_b64encode(raw).decode().rstrip("=")}).secret_key == raw
    )
    with pytest.raises(SettingsError, match="32"):
        Settings.from_env({"CONSENT_SECRET_KEY": "short"})


def test_public_base_url_must_be_absolute_and_loses_trailing_slash():
    assert Settings.from_env({"PUBLIC_BASE_URL": "https://c.example.com/"}).public_base_url == "https://c.example.com"
    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
        Settings.from_env({"PUBLIC_BASE_URL": "c.example.com"})


def test_dev_secrets_are_generated_once_and_kept_private(tmp_path):
    settings = Settings(data_dir=tmp_path / "d")
    first = settings.with_dev_secrets()
    second = settings.with_dev_secrets()
    assert first.secret_key is not None
    assert len(first.secret_key) == 32
    assert first.secret_key == second.secret_key
    assert (tmp_path / "d" / "secret_key").stat().st_mode & 0o777 == 0o600


def test_readme_documents_every_environment_variable(project_root):
    readme = (project_root / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.MULTILINE))
    assert set(ENVIRONMENT) <= documented, f"undocumented: {set(ENVIRONMENT) - documented}"


def test_nothing_but_settings_reads_the_environment(project_root):
    offenders = []
    for path in (project_root / "app").rglob("*.py"):
        if path.name == "settings.py":
            continue
        if re.search(r"os\.environ|os\.getenv", path.read_text()):
            offenders.append(path.name)
    assert offenders == []


def test_the_dev_outbox_is_on_for_the_embedded_database_and_off_with_a_real_one():
    assert Settings.from_env({}).dev_outbox is True
    assert Settings.from_env({"DATABASE_URL": "postgresql://h/db"}).dev_outbox is False
    assert Settings.from_env({"DATABASE_URL": "postgresql://h/db", "CONSENT_DEV_OUTBOX": "on"}).dev_outbox is True
    assert Settings.from_env({"CONSENT_DEV_OUTBOX": "off"}).dev_outbox is False
    with pytest.raises(SettingsError, match="CONSENT_DEV_OUTBOX"):
        Settings.from_env({"CONSENT_DEV_OUTBOX": "sometimes"})


def test_web_push_services_default_to_the_browsers_push_services_and_can_be_replaced_or_lifted():
    assert Settings.from_env({}).web_push_services == KNOWN_PUSH_SERVICES
    assert Settings.from_env(
        {"CONSENT_WEB_PUSH_SERVICES": " push.acme.example , *.Push.Example. "}
    ).web_push_services == (
        "push.acme.example",
        "*.push.example",
    )
    assert Settings.from_env({"CONSENT_WEB_PUSH_SERVICES": "*"}).web_push_services is None
    for bad in ("https://push.example", "push.example/x", "*push.example", "a..b"):
        with pytest.raises(SettingsError, match="CONSENT_WEB_PUSH_SERVICES"):
            Settings.from_env({"CONSENT_WEB_PUSH_SERVICES": bad})
