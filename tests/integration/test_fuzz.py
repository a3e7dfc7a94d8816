"""The suite fuzzes itself: schemathesis over every operation of ``openapi/openapi.json`` against the app.

The app runs in this test's event loop on the test's rolled-back transaction, like every other integration test,
served by uvicorn on a loopback port; the schemathesis CLI runs as a subprocess against it, seeded and bounded,
with an admin key of a test workspace that has a purpose and a contact (so that requests naming them get past
the 404s into the routes' logic). It must find no server error (a 5xx other than a declared 503) and no answer
the document does not describe: status, content type, headers and body schema.

The signed provider webhooks cannot be fuzzed past their signature check: they answer 403, which is declared.
Figures of the run (operations, requests, seconds) are printed; ``pytest -s`` shows them.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import time
from pathlib import Path

import pytest
import uvicorn

from app.cli import OPENAPI_PATH

pytestmark = pytest.mark.slow

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
SEED = 20261204
EXAMPLES_PER_OPERATION = 20  # the fuzzing phase's bound per operation; the coverage phase adds its boundary cases
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# Methods a route does not have answer 405 from the router: no check above looks at them, so none are sent.
CONFIG = """
[phases.coverage]
unexpected-methods = []

[parameters]
purpose = "newsletter"
"path.contact" = "fuzz-contact"
"query.contact" = "fuzz-contact"
"path.workspace_id" = "{workspace_id}"
"""


async def test_schemathesis_finds_no_server_error_and_no_undeclared_response(app, admin, tenant, ledger, tmp_path):
    await ledger.purpose("newsletter")
    await ledger.point("email", "fuzz@example.com", external_id="fuzz-contact")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.format(workspace_id=tenant.id))
    report = tmp_path / "report.json"
    with socket.socket() as sock:
        # uvicorn writes a response's head and its body separately: without TCP_NODELAY (accepted sockets inherit
        # it) the body waits for the client's delayed ACK, 40 ms a request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=1)
        )
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        started = time.monotonic()
        try:
            fuzz = await asyncio.create_subprocess_exec(
                SCHEMATHESIS,
                "--config-file",
                str(config),
                "--no-color",
                "run",
                str(OPENAPI_PATH),
                "--url",
                f"http://127.0.0.1:{port}",
                "--header",
                f"Authorization:{admin['Authorization']}",
                "--workers",
                "1",  # the app runs on one connection (the test's transaction)
                "--seed",
                str(SEED),
                "--max-examples",
                str(EXAMPLES_PER_OPERATION),
                "--phases",
                "examples,coverage,fuzzing",
                "--checks",
                ",".join(CHECKS),
                "--request-timeout",
                "10",
                "--suppress-health-check",
                "all",
                "--report",
                "json",
                "--report-json-path",
                str(report),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                cwd=tmp_path,
            )
            output, _ = await fuzz.communicate()
        finally:
            server.should_exit = True
            await serving
    seconds = time.monotonic() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = output.decode(errors="replace")
    (tmp_path / "output.txt").write_text(text)
    assert fuzz.returncode == 0, text[-30000:]
    summary = json.loads(report.read_text())
    assert summary["operations"]["tested"] == summary["operations"]["total"] == _operations_in_the_document()
    assert summary["test_cases"]["with_failures"] == 0
    assert summary["test_cases"]["errored"] == 0
    print(  # noqa: T201  # the run's figures, for the CI log
        f"\nschemathesis: {summary['operations']['tested']} operations, {summary['test_cases']['generated']} requests,"
        f" {seconds:.1f} s ({usage.ru_utime + usage.ru_stime:.1f} s CPU in the fuzzer), 0 failures"
    )


def _operations_in_the_document() -> int:
    document = json.loads(OPENAPI_PATH.read_text())
    return sum(1 for item in document["paths"].values() for method in item if method != "parameters")
