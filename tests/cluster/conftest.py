"""A fake GitHub, and deployments per test, on the session's one local Ray and Serve.

The session's Ray (`ray_serve`) is in tests/conftest.py, so that the Ray-marked fault
suite (tests/faults/test_process_kills.py) shares it. Every deployment gets its own
actor namespace and journal, and is torn down (Serve app deleted, detached actors
killed) after its test.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from actors.settings import RuntimeSettings
from ghbot.config import Settings
from ghbot.testing import FakeGitHub
from ghbot.testing.payloads import EXAMPLES
from ghbot.webhooks import sign
from tests.net import free_port as free_port  # the two-node tests import it from here

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = EXAMPLES
SECRET = "cluster-test-secret"
APP_ID = 4242


@pytest.fixture(scope="session")
def fake(public_pem: bytes) -> Iterator[Any]:
    thread = FakeGitHub.start_in_thread(app_id=APP_ID, public_key_pem=public_pem)
    try:
        yield thread
    finally:
        thread.stop()


@dataclass
class Deployment:
    url: str
    runtime: RuntimeSettings
    journal_dir: Path


@pytest.fixture
def deploy(
    ray_serve: str, fake: Any, pem_pkcs8: bytes, tmp_path: Path
) -> Iterator[Callable[..., Deployment]]:
    from ray import serve

    from actors.ray.deploy import application
    from actors.ray.lifecycle import kill_actors

    started: list[RuntimeSettings] = []

    def run(
        bot: str,
        *,
        max_retries: int = 3,
        journal_url: str | None = None,
        key_file: Path | None = None,
        private_key: bytes | None = None,
        webhook_secrets: tuple[str, ...] = (SECRET, "an-older-secret"),
        serve_options: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Deployment:
        """Deploy `bot`; `key_file` sends the key's path (as `GITHUB_PRIVATE_KEY=path`),
        `private_key` another PEM text than the session's key; `serve_options` are
        more of Serve's options for the ingress deployment (`application`)."""
        journal_dir = tmp_path / f"journal-{len(started)}"
        settings = Settings(
            app_id=APP_ID,
            private_key=None if key_file else (private_key or pem_pkcs8),
            private_key_path=str(key_file) if key_file else None,
            webhook_secrets=webhook_secrets,
            api_url=fake.url,
            max_retries=max_retries,
            journal_url=journal_url or f"sqlite://{journal_dir}",
        )
        kw.setdefault("shards", 2)
        kw.setdefault("vshards", 4)
        kw.setdefault("pace_writes", None)
        kw.setdefault("redeliver_every", 0)  # tests of the sweeper turn it on
        kw.setdefault("namespace", f"t-{uuid.uuid4().hex[:8]}")
        # Versioned as `serve run ghbot.deploy` does (`build_settings`).
        runtime = RuntimeSettings(bot=bot, settings=settings, **kw).versioned()
        serve.run(application(runtime, **(serve_options or {})), name="ghbot", route_prefix="/")
        started.append(runtime)
        return Deployment(ray_serve, runtime, journal_dir)

    yield run
    serve.delete("ghbot")
    for runtime in started:
        kill_actors(runtime.namespace, runtime.shards)
    on_fake(fake, fake.fake.faults.clear)  # the fake is the session's: faults end here


def ingress_replica_states() -> dict[str, int]:
    """Return how many of the deployment's ingress replicas are in each of Serve's
    states (`{"RUNNING": 2}`)."""
    from ray import serve

    deployments = serve.status().applications["ghbot"].deployments
    # Typed as `ReplicaState` keys; they come as plain names ("RUNNING").
    states: dict[str, int] = dict(deployments["WebhookIngress"].replica_states.items())
    return states


def payload(name: str, *, installation: int, repo: str, **changes: Any) -> dict[str, Any]:
    """Return a real payload for `installation` and `repo` (`owner/name`), fields changed."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    owner, _, short = repo.partition("/")
    data["installation"] = {"id": installation}
    data["repository"]["full_name"] = repo
    data["repository"]["name"] = short
    data["repository"]["owner"]["login"] = owner
    for path, value in changes.items():
        target = data
        *parents, leaf = path.split("__")
        for part in parents:
            target = target[part]
        target[leaf] = value
    return data


async def send(
    url: str,
    event: str,
    data: dict[str, Any] | bytes,
    *,
    guid: str | None = None,
    secret: str = SECRET,
    session: aiohttp.ClientSession | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST a signed delivery to the deployment; return (status, JSON answer)."""
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    sent = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": guid or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": sign(body, secret),
        **(headers or {}),
    }
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.post(f"{url}/webhooks", data=body, headers=sent) as answer:
            return answer.status, await answer.json(content_type=None)
    finally:
        if own:
            await session.close()


def comments(fake: Any, repo: str) -> list[dict[str, Any]]:
    """Return the comments the fake holds for `repo` (every issue), in creation order."""

    async def copy() -> list[dict[str, Any]]:
        owner, _, name = repo.partition("/")
        found = fake.fake.store.repo(owner, name)
        if found is None:
            return []
        every = [c for issue in found.comments.values() for c in issue]
        return sorted(every, key=lambda c: c["id"])

    return list(fake.run(copy()))


def worker_log_lines(logs: Path, needle: str, stream: str = "err") -> list[str]:
    """Return the lines of the Ray worker logs in `logs` (a Ray session's `logs`
    folder: its actors' and replicas' stderr, or with `stream="out"` stdout) that hold
    `needle`."""
    return [
        line
        for log in sorted(logs.glob(f"worker-*.{stream}"))
        for line in log.read_text(errors="replace").splitlines()
        if needle in line
    ]


def session_worker_log_lines(needle: str, stream: str = "err") -> list[str]:
    """`worker_log_lines` of the session's Ray (`ray_serve`, started in this process)."""
    import ray

    node = ray._private.worker._global_node
    assert node is not None
    return worker_log_lines(Path(node.get_logs_dir_path()), needle, stream)


async def eventually(check: Callable[[], bool], within: float = 30.0, every: float = 0.1) -> None:
    """Wait until `check()` is true; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within} s")
        await asyncio.sleep(every)


def on_fake(fake: Any, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a `FakeGitHub` setup method on the fake's own loop (it is not thread-safe)."""

    async def call() -> Any:
        return func(*args, **kwargs)

    return fake.run(call())


def install(fake: Any, installation: int, repo: str, issues: int = 1) -> None:
    """Install the app for `repo` and open `issues` issues there (numbers 1..issues)."""
    owner, _, name = repo.partition("/")
    on_fake(fake, fake.fake.add_installation, installation, owner, [name])
    for n in range(issues):
        on_fake(fake, fake.fake.add_issue, repo, f"issue {n + 1}")


Sample = tuple[dict[str, str], float]
Scrape = dict[str, list[Sample]]


def scrape_metrics() -> Scrape:
    """Return every sample of every live node's metrics export port, by sample name.

    That port (``ray.nodes()[i]["MetricsExportPort"]``) is the Prometheus endpoint of
    Ray's monitoring guide; application metrics show there named ``ray_<name>``.
    """
    import urllib.request

    import ray
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[Sample]] = {}
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if not node["Alive"]:
            continue
        url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def series_key(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def series(scrape: Scrape, name: str, labels: dict[str, str]) -> list[Sample]:
    """Return the samples of `name` (with the ``ray_`` prefix added) carrying `labels`."""
    found = scrape.get(f"ray_{name}", [])
    return [(got, v) for got, v in found if labels.items() <= got.items()]


def increase(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """Return how much `name`'s series carrying `labels` grew from `before` to `after`.

    Series are per process (``WorkerId``); one new since `before` counts from 0.
    """
    old = {series_key(got): v for got, v in series(before, name, labels)}
    return sum(v - old.get(series_key(got), 0.0) for got, v in series(after, name, labels))
