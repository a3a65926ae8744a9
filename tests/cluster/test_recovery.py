"""Total recovery: the cluster is lost, the journal is kept, a new deployment resumes.

The operations document's runbook: point a new deployment at the same journal with
the same number of virtual shards; each shard takes its virtual shards' epochs and
resumes their pending deliveries. Here GitHub fails every comment (the breaker opens,
the deliveries wait, journaled and acknowledged), then every actor of the deployment
is killed without draining (as a lost cluster would be), and a deployment in another
namespace (another cluster, as far as Ray's names go) is started on the same journal.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from ray import serve

from tests.cluster.conftest import comments, eventually, install, on_fake, payload, send

pytestmark = pytest.mark.cluster

REPO = "recovery/repo"
INSTALLATION = 1600


async def test_a_new_cluster_on_the_kept_journal_resumes_what_was_acknowledged(
    deploy: Any, fake: Any, tmp_path: Path
) -> None:
    from actors.ray.admin import dead_letters, stats
    from actors.ray.lifecycle import kill_actors

    install(fake, INSTALLATION, REPO, issues=3)
    journal_url = f"sqlite://{tmp_path}/kept-journal"
    lost = deploy("tests.cluster.bots:Greeter", journal_url=journal_url, max_retries=3)
    on_fake(fake, fake.fake.faults.add, f"^/repos/{REPO}/", "server_error", None)
    guids = [str(uuid.uuid4()) for _ in range(8)]
    for n, guid in enumerate(guids):
        data = payload(
            "issues.opened", installation=INSTALLATION, repo=REPO, issue__number=1 + n % 3
        )
        assert (await send(lost.url, "issues", data, guid=guid))[0] == 202
    namespace = lost.runtime.namespace
    await eventually(lambda: sum(s["open_breakers"] for s in stats(namespace)) == 1, within=30)
    assert comments(fake, REPO) == []

    # The cluster is lost: its app and every actor gone at once, nothing drained.
    serve.delete("ghbot")
    assert kill_actors(namespace, lost.runtime.shards) == 1 + lost.runtime.shards
    on_fake(fake, fake.fake.faults.clear)

    new = deploy("tests.cluster.bots:Greeter", journal_url=journal_url)
    assert new.runtime.namespace != namespace and new.runtime.vshards == lost.runtime.vshards

    def handled() -> list[str]:
        return [c["body"].rsplit(" ", 1)[1] for c in comments(fake, REPO)]

    await eventually(lambda: set(handled()) == set(guids), within=60)
    found = handled()
    assert sorted(found) == sorted(guids), "a delivery ran twice, or one not sent"
    assert dead_letters(new.runtime.namespace) == []
