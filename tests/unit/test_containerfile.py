"""The Containerfile's properties (no image can be built on these machines)."""

from __future__ import annotations

import json
import re


def instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_containerfile_is_multi_stage_non_root_with_healthcheck_and_exec_cmd(project_root):
    steps = instructions((project_root / "Containerfile").read_text())
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    runtime = steps[max(i for i, (k, _) in enumerate(steps) if k == "FROM") :]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "the runtime stage sets a USER"
    assert users[-1] not in {"root", "0", "0:0"}
    assert any(keyword == "HEALTHCHECK" and "/health" in rest for keyword, rest in runtime)
    cmd = [rest for keyword, rest in runtime if keyword == "CMD"][-1]
    assert isinstance(json.loads(cmd), list), "exec-form CMD"
    assert any(keyword == "COPY" and "migrations" in rest for keyword, rest in steps), "migrations in the image"
    assert any("uv sync --locked" in rest for keyword, rest in steps if keyword == "RUN")
