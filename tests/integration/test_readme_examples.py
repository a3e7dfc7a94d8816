"""The request bodies README.md shows are the ones the service takes (a newcomer copies them)."""

from __future__ import annotations

import json
import re

from app.lib.auth import Scope


def _json_blocks(readme: str, after: str) -> list[dict]:
    section = readme[readme.index(after) :]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]


async def test_the_chain_example_is_a_chain_the_service_takes(client, tenant, ledger, project_root):
    readme = (project_root / "README.md").read_text(encoding="utf-8")
    example = _json_blocks(readme, "## Chains: follow-up steps")[0]
    await ledger.purpose(example["purpose"])
    created = await client.post("/v1/chains", json=example, headers=await tenant.key(Scope.MESSAGES_SEND))
    assert created.status_code == 201, created.text
    assert [step["key"] for step in created.json()["steps"]] == ["mail", "code", "nudge"]


def _heredoc(readme: str, after: str, marker: str) -> str:
    section = readme[readme.index(after) :]
    return re.search(rf"<<'{marker}'\n(.*?)\n{marker}\n", section, re.DOTALL).group(1) + "\n"


async def test_the_import_examples_are_files_the_service_takes(client, tenant, ledger, project_root):
    readme = (project_root / "README.md").read_text(encoding="utf-8")
    await ledger.purpose("newsletter")
    writer = await tenant.key(Scope.CONSENTS_WRITE)
    for marker, content_type, lines in (("CSV", "text/csv", 2), ("NDJSON", "application/x-ndjson", 1)):
        body = _heredoc(readme, "### Importing consents", marker)
        answer = await client.post(
            "/v1/imports/consents", content=body.encode(), headers={**writer, "Content-Type": content_type}
        )
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert (report["recorded"], report["rejected"], report["problems"]) == (lines, 0, []), report
