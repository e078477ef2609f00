"""The serve, probe and metrics commands of docs/deploy.md, run as written (the port
and the shell's variables aside) against the server they start."""

from __future__ import annotations

import json
import re
import secrets
import shlex
import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live.servers import Server, free_port, make_deployment
from tests.ops.test_deploy_doc import command

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, str]]]:
    workdir = tmp_path_factory.mktemp("doc")
    token = secrets.token_urlsafe(32)
    deployment = make_deployment(workdir, f"sqlite:///{workdir / 'doc.db'}",
                                 METRICS_TOKEN=token)
    deployment.cli(*shlex.split(command(r"latchkey db upgrade"))[1:])  # as the guide says
    deployment.cli("create-org", "--name", "Doc", "--slug", "doc")
    port = free_port()
    serve = command(r"latchkey serve .*").replace("--port 8000", f"--port {port}")
    with Server(deployment, port, "doc", argv=shlex.split(serve)[1:]).running():
        yield port, {"LATCHKEY_METRICS_TOKEN": token}


def run(line: str, port: int, env: dict[str, str]) -> str:
    result = subprocess.run(["bash", "-c", line.replace(":8000", f":{port}")],
                            env={"PATH": "/usr/bin:/bin", **env}, capture_output=True,
                            text=True, timeout=30, check=True)
    return result.stdout


def test_probe_and_metrics_commands_answer_as_the_guide_says(served):
    port, env = served
    probes = [c for c in re.findall(r"curl -s http\S+", "\n".join(
        [command(r"curl -s http://127.0.0.1:8000/healthz"),
         command(r"curl -s http://127.0.0.1:8000/readyz")]))]

    healthz, readyz = (json.loads(run(c, port, env)) for c in probes)
    scraped = run(command(r"curl -s -H .*"), port, env)

    assert healthz == {"status": "ok"}
    assert readyz["status"] == "ready" and readyz["checks"]["signing_key"] == "ok"
    names = {f.name for f in text_string_to_metric_families(scraped)}
    assert "latchkey_http_request_duration_seconds" in names
    assert "latchkey_org_signing_key_age_seconds" in names
    # Without the token the same scrape is refused, even from loopback.
    refused = run(f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{port}/metrics",
                  port, env)
    assert refused == "401"
