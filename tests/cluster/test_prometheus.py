"""A real Prometheus, configured as docs/operations.md says, over the session's Ray.

Prometheus (Debian's `prometheus` package, which `.ci/run` installs for promtool) runs
on a free port with the example configuration of `deploy/prometheus/prometheus.yml`:
its rule files and its `ray` job, discovered from a file in the format Ray's head
writes (the session's Ray runs without the dashboard that writes the real one), with
1 s intervals instead of 15 s. The test checks what a user following the document
would check: the target is up, every recording rule and alert is loaded and
evaluates without error, ghbot's recorded series get values, a forged delivery
makes `GhbotWebhookSignatureFailures` fire, a dead letter `GhbotDeadLetters`, and
deliveries for a shard lost and not restarted make `GhbotHeldDeliveriesExpired` fire.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from actors.ray.names import shard_name
from actors.runtime_events import NO_INSTALLATION
from actors.wire import shard_of, vshard_of
from tests.cluster.conftest import comments, free_port, install, payload, send

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
WITHIN = 150.0  # seconds: Ray's export lags ~15 s, then two scrapes for a rate


def _prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is not None:
        return path
    reason = "prometheus is not installed (apt-get install prometheus)"
    if os.environ.get("CI") or os.environ.get("GHBOT_REQUIRE_PROMTOOL") == "1":
        pytest.fail(f"{reason}, and CI or GHBOT_REQUIRE_PROMTOOL=1 requires it")
    pytest.skip(reason)


def _config(tmp: Path, targets: list[str]) -> Path:
    """Write the example configuration, pointed at `targets`, with 1 s intervals."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "ray"
    discovery = tmp / "prom_metrics_service_discovery.json"
    discovery.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": targets}]))
    job["file_sd_configs"][0]["files"] = [str(discovery)]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def prometheus(ray_serve: str, tmp_path: Path) -> Iterator[str]:
    """Start Prometheus over the session Ray's metrics export ports; yield its URL."""
    import ray

    binary = _prometheus_binary()
    targets = [
        f"{node['NodeManagerAddress']}:{node['MetricsExportPort']}"
        for node in ray.nodes()  # type: ignore[no-untyped-call]
        if node["Alive"]
    ]
    port = free_port()
    command = [
        binary,
        f"--config.file={_config(tmp_path, targets)}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:  # noqa: S310
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((tmp_path / "prometheus.log").read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _api(url: str, path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}/api/v1/{path}{query}", timeout=10) as answer:  # noqa: S310
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


def _values(url: str, expr: str) -> list[float]:
    return [float(r["value"][1]) for r in _api(url, "query", query=expr)["result"]]


async def _until(
    check: Callable[[], list[str]],
    traffic: Callable[[], Awaitable[None]],
    within: float = WITHIN,
) -> None:
    """Send `traffic` and `check` every 2 s until nothing is wrong; fail after `within`."""
    deadline = time.monotonic() + within
    while True:
        await traffic()
        wrong = await asyncio.to_thread(check)
        if not wrong:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"after {within} s in Prometheus: {wrong}")
        await asyncio.sleep(2)


def _rules_in_files() -> tuple[set[str], set[str]]:
    recorded: set[str] = set()
    alerts: set[str] = set()
    for name in ("ghbot-rules.yml", "ghbot-alerts.yml"):
        for group in yaml.safe_load((PROMETHEUS / name).read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    recorded.add(rule["record"])
                else:
                    alerts.add(rule["alert"])
    return recorded, alerts


async def test_prometheus_as_documented_scrapes_ghbot_and_fires_alerts(
    prometheus: str, deploy: Any, fake: Any
) -> None:
    install(fake, 1502, "prometheus/scraped")
    app = deploy("tests.cluster.bots:Greeter")
    data = payload("issues.opened", installation=1502, repo="prometheus/scraped", issue__number=1)
    status, _ = await send(app.url, "issues", data, secret="forged", guid=str(uuid.uuid4()))
    assert status == 401
    # A delivery of no installation: the Greeter's comment raises NoInstallation, which
    # dead-letters it at once, and GhbotDeadLetters fires on the shard's first one.
    orphan = {k: v for k, v in data.items() if k != "installation"}
    assert (await send(app.url, "issues", orphan))[0] == 202

    # Another installation's shard is lost and not restarted: each delivery for it is
    # held for the whole hold, then answered 503, and GhbotHeldDeliveriesExpired fires
    # (an increase: the count must grow after Prometheus first sees it, so they go on).
    layout = app.runtime

    def owner_of(installation: int) -> int:
        return shard_of(vshard_of(installation, layout.vshards), layout.shards)

    # The dead letter's shard (of no installation's stream) is 1502's, and not lost.
    assert owner_of(1502) == owner_of(NO_INSTALLATION)
    lost = next(i for i in range(1503, 1600) if owner_of(i) != owner_of(1502))
    install(fake, lost, "prometheus/lost")
    shard = ray.get_actor(shard_name(owner_of(lost)), namespace=layout.namespace)
    ray.kill(shard, no_restart=True)
    lost_answers: list[int] = []

    async def held_until_expired() -> None:
        lost_data = payload("issues.opened", installation=lost, repo="prometheus/lost")
        while True:
            lost_answers.append((await send(app.url, "issues", lost_data))[0])

    holding = asyncio.create_task(held_until_expired())

    async def traffic() -> None:
        # A rate counts the increases Prometheus sees, so deliveries keep coming, as
        # they do in production: a counter's first value in a new process is not one.
        assert (await send(app.url, "issues", data))[0] == 202

    recorded, alerts = _rules_in_files()
    assert len(alerts) == 14

    def check() -> list[str]:
        wrong: list[str] = []
        targets = _api(prometheus, "targets")["activeTargets"]
        if not targets or any(t["health"] != "up" for t in targets):
            wrong.append(f"targets: {[(t['scrapeUrl'], t['health']) for t in targets]}")
        loaded_records: set[str] = set()
        loaded_alerts: set[str] = set()
        for group in _api(prometheus, "rules")["groups"]:
            for rule in group["rules"]:
                if rule["health"] == "err":
                    wrong.append(f"rule {rule['name']}: {rule.get('lastError')}")
                (loaded_alerts if rule["type"] == "alerting" else loaded_records).add(rule["name"])
        if (loaded_records, loaded_alerts) != (recorded, alerts):
            wrong.append(f"loaded {len(loaded_records)} records, {len(loaded_alerts)} alerts")
        for series in (
            'ghbot:webhooks_received:rate5m{event="issues"}',
            'ghbot:api_requests:rate5m{method="POST",status_class="2xx"}',
            "ghbot:webhook_signature_failures:increase5m",
        ):
            if not any(v > 0 for v in _values(prometheus, series)):
                wrong.append(f"{series} has no positive value")
        if wrong:
            names = _api(prometheus, "label/__name__/values")
            wrong.append(f"series scraped: {sorted(n for n in names if 'ghbot_' in n)}")
            wrong.append(f"comments made: {len(comments(fake, 'prometheus/scraped'))}")
        firing = {
            a["labels"]["alertname"]
            for a in _api(prometheus, "alerts")["alerts"]
            if a["state"] == "firing"
        }
        expected = {"GhbotWebhookSignatureFailures", "GhbotHeldDeliveriesExpired"}
        if not expected | {"GhbotDeadLetters"} <= firing:
            wrong.append(f"firing: {sorted(firing)}; the lost shard's answers: {lost_answers}")
        return wrong

    try:
        await _until(check, traffic)
    finally:
        holding.cancel()
    assert set(lost_answers) == {503}, lost_answers  # none taken: its shard is gone
