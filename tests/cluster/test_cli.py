"""`ghbot dead-letters` and `ghbot status` on a live deployment, through the CLI's `main`.

The session's Ray is already initialized in this process, so the commands use that
connection (and leave it open) instead of connecting again.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import ray

from actors.ray import admin
from actors.wire import shard_of, vshard_of
from ghbot import cli
from tests.cluster.conftest import comments, eventually, install, on_fake, payload, send


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _shard(app: Any, installation: int) -> int:
    """The index of the shard that hosts `installation` in `app`'s deployment."""
    return shard_of(vshard_of(installation, app.runtime.vshards), app.runtime.shards)


async def _failing_delivery(
    deploy: Any, fake: Any, installation: int, repo: str
) -> tuple[Any, list[str], str]:
    """Deploy `Greeter`, make `repo`'s GitHub calls fail, and send one delivery of
    `installation` (acknowledged); return the deployment, its namespace arguments and
    the delivery's GUID."""
    install(fake, installation, repo)
    app = deploy("tests.cluster.bots:Greeter", max_retries=0)
    on_fake(fake, fake.fake.faults.add, f"^/repos/{repo}/", "server_error", None)
    guid = str(uuid.uuid4())
    data = payload("issues.opened", installation=installation, repo=repo, issue__number=1)
    assert (await send(app.url, "issues", data, guid=guid))[0] == 202
    return app, ["--namespace", app.runtime.namespace], guid


async def test_list_and_replay_a_dead_letter_from_the_command_line(
    deploy: Any, fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    repo, later_repo = "cli/failing", "cli/failing-later"
    app, namespace, guid = await _failing_delivery(deploy, fake, 1103, repo)

    def listed() -> list[dict[str, Any]]:
        code, out, err = _run(["dead-letters", "list", "--json", *namespace], capsys)
        assert (code, err) == (0, "")
        return list(json.loads(out))

    await eventually(lambda: len(listed()) == 1, within=30)
    (dead,) = listed()
    assert (dead["delivery_id"], dead["handler"], dead["installation_id"]) == (
        guid,
        "welcome",
        1103,
    )
    # A later dead letter on a shard listed before this one's: the list is oldest first
    # across shards, not in the shards' order.
    later = next(i for i in range(1104, 1200) if _shard(app, i) < _shard(app, 1103))
    install(fake, later, later_repo)
    on_fake(fake, fake.fake.faults.add, f"^/repos/{later_repo}/", "server_error", None)
    later_guid = str(uuid.uuid4())
    data = payload("issues.opened", installation=later, repo=later_repo, issue__number=1)
    assert (await send(app.url, "issues", data, guid=later_guid))[0] == 202
    await eventually(lambda: len(listed()) == 2, within=30)
    assert [d["delivery_id"] for d in listed()] == [guid, later_guid]
    code, out, _ = _run(["dead-letters", "list", *namespace], capsys)
    header, first, second = out.splitlines()
    assert code == 0 and header.startswith("DELIVERY")
    assert guid in first and "ServerError" in first and later_guid in second

    code, out, _ = _run(["status", "--json", *namespace], capsys)
    assert code == 0 and [s["index"] for s in json.loads(out)] == [0, 1]
    assert sum(s["received"] for s in json.loads(out)) == 2

    on_fake(fake, fake.fake.faults.clear)
    code, _, err = _run(["dead-letters", "replay", guid, "--handler", "nope", *namespace], capsys)
    assert code == 1 and "no dead letter" in err
    code, out, _ = _run(["dead-letters", "replay", guid, *namespace], capsys)
    assert (code, out) == (0, f"replayed 1 handler(s) of delivery {guid}\n")
    await eventually(lambda: f"hello {guid}" in [c["body"] for c in comments(fake, repo)])
    await eventually(lambda: [d["delivery_id"] for d in listed()] == [later_guid])
    assert _run(["dead-letters", "replay", later_guid, *namespace], capsys)[0] == 0
    await eventually(lambda: listed() == [])
    code, out, _ = _run(["dead-letters", "list", *namespace], capsys)
    assert (code, out) == (0, "no dead letters\n")
    assert ray.is_initialized()  # the commands left the session's connection open


async def test_a_dead_letter_on_a_draining_shard_is_not_replayed_and_the_command_says_why(
    deploy: Any, fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = "cli/draining"
    app, namespace, guid = await _failing_delivery(deploy, fake, 1104, repo)
    await eventually(lambda: len(admin.dead_letters(app.runtime.namespace)) == 1, within=30)
    on_fake(fake, fake.fake.faults.clear)
    (dead,) = admin.dead_letters(app.runtime.namespace)
    # The shard holding it drains, as in an upgrade before its successor starts.
    assert await admin.shards(app.runtime.namespace)[dead["shard"]].drain.remote(10.0)
    code, out, err = _run(["dead-letters", "replay", guid, *namespace], capsys)
    # It used to say there was no such dead letter (exit 1), and nothing ran.
    assert (code, out) == (2, "")
    assert err.startswith("ghbot: error: the shard holding installation 1104 is draining")
    assert err.count("\n") == 1 and f"delivery {guid} was not replayed" in err
    assert [d["delivery_id"] for d in admin.dead_letters(app.runtime.namespace)] == [guid]
    assert comments(fake, repo) == []


async def test_redeliver_says_in_one_line_that_github_refused_the_listing(
    deploy: Any, fake: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app-auth actor's error comes back through Ray wrapped in Ray's own error,
    whose first line names the actor and its pid only: the command prints GitHub's
    answer instead."""
    app = deploy("tests.cluster.bots:Greeter")
    on_fake(fake, fake.fake.faults.add, "^/app/hook/deliveries", "server_error", None)
    argv = ["redeliver", "--since", "1d", "--namespace", app.runtime.namespace]
    code, out, err = _run(argv, capsys)
    assert (code, out) == (2, "")
    assert err.startswith("ghbot: error: ") and err.count("\n") == 1, err
    assert "/app/hook/deliveries" in err and "502" in err


def test_a_namespace_without_a_deployment(
    ray_serve: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["status"], ["dead-letters", "list"], ["dead-letters", "replay", "g"]):
        code, out, err = _run([*argv, "--namespace", f"none-{uuid.uuid4().hex[:6]}"], capsys)
        assert code == 2 and out == ""
        assert err.startswith("ghbot: error: no ghbot deployment in Ray namespace")
        assert err.count("\n") == 1
