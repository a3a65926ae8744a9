"""The example bot, through a shard (no Ray) and the real client against FakeGitHub."""

from __future__ import annotations

from pathlib import Path

from actors.github import InstallationClients
from actors.settings import RuntimeSettings
from actors.shard import ShardCore
from examples.greeter import Greeter
from ghbot.client import GitHubApp
from ghbot.config import Settings
from ghbot.journal import open_journal
from ghbot.testing import FakeGitHub
from tests.runtime.conftest import INSTALLATION, VSHARDS, batch, inbound, payload
from tests.tracing import recorder


async def test_greeter_comments_labels_and_counts(
    tmp_path: Path, pem_pkcs8: bytes, public_pem: bytes
) -> None:
    spans = recorder()
    async with FakeGitHub(app_id=3, public_key_pem=public_pem) as fake:
        fake.add_installation(INSTALLATION, "Codertocat", ["Hello-World"])
        issue = fake.add_issue("Codertocat/Hello-World", "A bug")
        pull = fake.add_pull_request("Codertocat/Hello-World", "A fix")
        settings = Settings(
            app_id=3,
            private_key=pem_pkcs8,
            webhook_secrets=("s",),
            api_url=fake.url,
            journal_url=f"sqlite://{tmp_path}/journal",
        )
        runtime = RuntimeSettings(bot="examples.greeter:Greeter", settings=settings)
        clients = InstallationClients(
            runtime, GitHubApp.from_settings(settings).create_installation_token
        )
        journal = await open_journal(settings.journal_url, shard_count=VSHARDS)
        shard = ShardCore(
            range(VSHARDS), VSHARDS, journal, Greeter, github_for=clients.for_installation
        )
        try:
            await shard.start()
            opened = payload("issues.opened", issue__number=issue["number"])
            pr = payload("pull_request.opened", pull_request__number=pull["number"])
            first = inbound(Greeter, "issues", opened)
            opened_id = first.received.delivery_id
            statuses = await shard.ingest(batch(first, inbound(Greeter, "pull_request", pr)))
            assert statuses == ["accepted", "accepted"]
            await shard.wait_idle()
            comments = fake.requests_to(
                f"/repos/Codertocat/Hello-World/issues/{issue['number']}/comments", "POST"
            )
            assert len(comments) == 1
            assert comments[0].json["body"].startswith("Thanks for opening this issue")
            labels = fake.requests_to(
                f"/repos/Codertocat/Hello-World/issues/{pull['number']}/labels", "POST"
            )
            assert [r.json for r in labels] == [{"labels": ["needs-review"]}]
            host = await shard.host(INSTALLATION)
            assert host.bot.state == {"Codertocat/Hello-World": 1}

            # One span per delivery, its GitHub requests (and their tokens) inside it.
            finished = spans.get_finished_spans()
            [root] = [s for s in finished if s.name == "issues.opened"]
            assert root.attributes is not None and root.parent is None
            assert root.attributes["github.installation_id"] == INSTALLATION
            assert root.attributes["github.repository"] == "Codertocat/Hello-World"
            assert root.attributes["github.delivery_id"] == opened_id
            inside = [s for s in finished if s.context.trace_id == root.context.trace_id]
            posts = [s for s in inside if s.name == "GitHub POST"]
            endpoints = {s.attributes["github.api.endpoint"] for s in posts if s.attributes}
            assert f"/repos/Codertocat/Hello-World/issues/{issue['number']}/comments" in endpoints
            assert {s.attributes["http.response.status_code"] for s in posts if s.attributes} == {
                201
            }
            assert all(s.parent is not None for s in inside if s is not root)
            tokens = [s for s in inside if s.name == "GitHub installation token"]
            assert tokens and all(s.attributes and "auth.cache_hit" in s.attributes for s in tokens)
            text = repr([dict(s.attributes or {}) for s in finished])
            assert "ghs_" not in text and "Bearer" not in text
        finally:
            await shard.close()
            await journal.close()
