"""`install_tracing`: the `OTEL_*` variables turn tracing on in a runtime process.

A process sets its tracer provider once, so each case runs in a fresh interpreter,
as each Ray worker is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from actors.tracing import exporter_names

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import logging, os, sys
for name in os.environ.get("TEST_NOT_INSTALLED", "").split():
    sys.modules[name] = None  # its import fails, as if the package were not installed
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from actors.tracing import install_tracing
from ghbot.telemetry import tracer
print("installed" if install_tracing() else "not installed", file=sys.stderr)
with tracer.start_as_current_span("webhook issues") as span:
    span.set_attribute("github.event_type", "issues")
"""


def run(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_console_exporter_prints_the_spans_of_the_process() -> None:
    done = run(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="ghbot-test")
    assert "installed" in done.stderr.splitlines()
    span = json.loads(done.stdout)
    assert span["name"] == "webhook issues"
    assert span["attributes"] == {"github.event_type": "issues"}
    assert span["resource"]["attributes"]["service.name"] == "ghbot-test"


def test_the_spans_service_name_is_ghbot_unless_set() -> None:
    span = json.loads(run(OTEL_TRACES_EXPORTER="console").stdout)
    assert span["resource"]["attributes"]["service.name"] == "ghbot"


def test_without_otel_variables_nothing_is_installed() -> None:
    done = run()
    assert "not installed" in done.stderr.splitlines()
    assert done.stdout == ""


def test_an_exporter_that_cannot_be_made_is_logged_not_fatal() -> None:
    done = run(OTEL_TRACES_EXPORTER="zipkin")
    assert "not installed" in done.stderr.splitlines()
    assert "ghbot knows console and otlp" in done.stderr


def test_which_exporters_the_environment_asks_for() -> None:
    assert exporter_names({}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporter_names({"OTEL_TRACES_EXPORTER": "console, OTLP"}) == ["console", "otlp"]
    assert exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert exporter_names({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318"}) == ["otlp"]


def test_otlp_without_its_package_says_what_to_install() -> None:
    # The tests install the exporter (tests/cluster/test_tracing.py uses it): hidden here.
    hidden = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    done = run(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318", TEST_NOT_INSTALLED=hidden)
    assert "not installed" in done.stderr.splitlines()
    assert "pip install opentelemetry-exporter-otlp-proto-http" in done.stderr
