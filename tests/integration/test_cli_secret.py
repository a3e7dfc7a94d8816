"""Only ``consent serve --dev`` may generate a secret key; every other command that needs one refuses without it.

The commands run in this process (``tests.conftest.run_cli_in_process``: click's entry point, the environment as
given, the exit status and streams as a subprocess would report them).
"""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import run_cli_in_process


@pytest.mark.parametrize(
    "command",
    [
        ["worker"],
        ["import", "robinson", "--workspace", str(uuid.uuid4()), "{file}"],
        ["import", "consents", "--workspace", str(uuid.uuid4()), "{file}"],
    ],
    ids=["worker", "import-robinson", "import-consents"],
)
def test_commands_other_than_serve_dev_refuse_without_a_secret_key(tmp_path, command):
    data_dir = tmp_path / "data"
    listed = tmp_path / "list.csv"
    listed.write_text("")
    # a database that does not answer: the command must refuse before it would open one
    env = {
        "CONSENT_SECRET_KEY": None,
        "CONSENT_DATA_DIR": str(data_dir),
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    }
    args = [part.replace("{file}", str(listed)) for part in command]
    result = run_cli_in_process(args, env)
    assert result.returncode != 0
    assert "CONSENT_SECRET_KEY is not set" in result.stderr
    assert not (data_dir / "secret_key").exists()


def test_on_the_embedded_database_the_key_serve_dev_made_is_read(tmp_path):
    """A newcomer's `consent import consents` after `serve --dev`: the key is in the data folder, not to be copied."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "secret_key").write_text("ab" * 32 + "\n")
    lines = tmp_path / "lines.ndjson"
    lines.write_text("")
    env = {"DATABASE_URL": None, "CONSENT_SECRET_KEY": None, "CONSENT_DATA_DIR": str(data_dir)}
    args = ["import", "consents", "--workspace", str(uuid.uuid4()), str(lines)]
    result = run_cli_in_process(args, env, timeout=120)
    assert "CONSENT_SECRET_KEY is not set" not in result.stderr, result.stderr
    assert (data_dir / "secret_key").read_text() == "ab" * 32 + "\n", "read, never replaced"
    # serve --dev made the key but no database here: a newcomer in the wrong folder is told (newcomer review)
    assert f"no database was in {data_dir.resolve()}; a new, empty one was made there" in result.stderr
