"""docs/handlers.md: its snippets are one module that passes `mypy --strict` and does
what the page says, one delivery per handler through a shard (no Ray) against FakeGitHub.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from actors.github import InstallationClients
from actors.settings import RuntimeSettings
from actors.shard import ShardCore
from ghbot.client import GitHubApp
from ghbot.config import Settings
from ghbot.journal import open_journal
from ghbot.testing import FakeGitHub
from tests.runtime.conftest import INSTALLATION, VSHARDS, batch, inbound, payload

ROOT = Path(__file__).resolve().parents[2]
REPO = "Codertocat/Hello-World"


def module_source() -> str:
    """Return the page's Python blocks, in order, joined: the `Chores` bot module."""
    text = (ROOT / "docs" / "handlers.md").read_text()
    return "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))


@pytest.fixture(scope="module")
def chores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModuleType]:
    path = tmp_path_factory.mktemp("doc") / "chores_doc.py"
    path.write_text(module_source())
    spec = importlib.util.spec_from_file_location("chores_doc", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


def test_the_bots_manifest_asks_for_what_its_handlers_do(
    chores: tuple[Path, ModuleType],
) -> None:
    from actors.register import manifest_for

    manifest = manifest_for(chores[1].Chores, name="c", webhook_url="w", redirect_url="r")
    assert manifest["default_events"] == ["check_suite", "issues", "pull_request", "push"]
    assert manifest["default_permissions"] == {
        "checks": "write",
        "contents": "read",
        "issues": "write",
        "pull_requests": "write",
        "statuses": "write",
    }


def test_the_snippets_pass_mypy_strict(chores: tuple[Path, ModuleType]) -> None:
    path, _ = chores
    binary = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")
    if binary is None:
        pytest.skip("mypy is not installed")
    argv = [binary, "--strict", "--no-error-summary", str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    source = module_source()
    assert "getattr" not in source and "cast(" not in source and "type: ignore" not in source


async def test_each_handler_does_what_the_page_says(
    chores: tuple[Path, ModuleType], tmp_path: Path, pem_pkcs8: bytes, public_pem: bytes
) -> None:
    bot = chores[1].Chores
    async with FakeGitHub(app_id=3, public_key_pem=public_pem) as fake:
        fake.add_installation(INSTALLATION, "Codertocat", ["Hello-World"])
        issue = fake.add_issue(REPO, "A bug")
        pull = fake.add_pull_request(REPO, "A fix", head_sha="b" * 40)
        settings = Settings(
            app_id=3,
            private_key=pem_pkcs8,
            webhook_secrets=("s",),
            api_url=fake.url,
            journal_url=f"sqlite://{tmp_path}/journal",
        )
        runtime = RuntimeSettings(bot="chores_doc:Chores", settings=settings, pace_writes=None)
        clients = InstallationClients(
            runtime, GitHubApp.from_settings(settings).create_installation_token
        )
        journal = await open_journal(settings.journal_url, shard_count=VSHARDS)
        shard = ShardCore(
            range(VSHARDS), VSHARDS, journal, bot, github_for=clients.for_installation
        )
        deliveries = [
            ("issues", payload("issues.opened", issue__number=issue["number"])),
            (
                "pull_request",
                payload(
                    "pull_request.opened",
                    pull_request__number=pull["number"],
                    pull_request__draft=True,
                    pull_request__head__sha="b" * 40,
                ),
            ),
            ("check_suite", payload("check_suite.requested", check_suite__id=77)),
            ("push", payload("push", after="c" * 40, deleted=False)),
        ]
        try:
            await shard.start()
            statuses = await shard.ingest(batch(*(inbound(bot, e, b) for e, b in deliveries)))
            assert statuses == ["accepted"] * 4
            await shard.wait_idle()
            assert not shard.counters.get("dead_letters"), shard.counters

            # thank: one comment on the issue, naming the sender.
            base = f"/repos/{REPO}"
            [comment] = fake.requests_to(f"{base}/issues/{issue['number']}/comments", "POST")
            assert comment.json["body"].startswith("Thanks, @Codertocat!")

            # triage: labels (draft too), then a COMMENT review pinned to the head.
            [labels] = fake.requests_to(f"{base}/issues/{pull['number']}/labels", "POST")
            assert labels.json == {"labels": ["needs-review", "draft"]}
            [review] = fake.requests_to(f"{base}/pulls/{pull['number']}/reviews", "POST")
            assert review.json["event"] == "COMMENT" and review.json["commit_id"] == "b" * 40
            assert (
                fake.store.repo("Codertocat", "Hello-World").reviews[pull["number"]][0]["state"]
                == "COMMENTED"
            )

            # check: a run created in progress with the external_id, then completed.
            [created] = fake.requests_to(f"{base}/check-runs", "POST")
            assert created.json["external_id"] == "suite-77"
            assert created.json["status"] == "in_progress"
            [run] = fake.store.repo("Codertocat", "Hello-World").check_runs.values()
            assert (run["status"], run["conclusion"]) == ("completed", "success")
            assert run["external_id"] == "suite-77"

            # mark: a success status on the pushed commit.
            [status] = fake.requests_to(f"{base}/statuses/{'c' * 40}", "POST")
            assert status.json["state"] == "success" and status.json["context"] == "chores/push"

            # relabel: the repository's .github/chores.yml says which label; a broken
            # one is a failing check run on the head, and nothing else.
            sync = payload(
                "pull_request.synchronize",
                number=pull["number"],
                pull_request__number=pull["number"],
                pull_request__head__sha="d" * 40,
            )
            fake.add_file(REPO, ".github/chores.yml", "label_updates: updated\n")
            await shard.ingest(batch(inbound(bot, "pull_request", sync)))
            await shard.wait_idle()
            labelled = fake.requests_to(f"{base}/issues/{pull['number']}/labels", "POST")
            assert labelled[-1].json == {"labels": ["updated"]}
            fake.add_file(REPO, ".github/chores.yml", "label_updates: [not, a, string]\n")
            await shard.ingest(batch(inbound(bot, "pull_request", sync)))
            await shard.wait_idle()
            assert len(fake.requests_to(f"{base}/issues/{pull['number']}/labels", "POST")) == 2
            failed = fake.requests_to(f"{base}/check-runs", "POST")[-1].json
            assert failed["conclusion"] == "failure" and failed["head_sha"] == "d" * 40
            assert failed["output"]["title"] == ".github/chores.yml cannot be used"
            assert "Expected `str | null`, got `array`" in failed["output"]["summary"]
            assert not shard.counters.get("dead_letters"), shard.counters
        finally:
            await shard.close()
            await journal.close()


async def test_a_comment_review_without_a_body_is_a_typed_validation_error(
    public_pem: bytes, pem_pkcs8: bytes
) -> None:
    from ghbot.auth import AppAuth
    from ghbot.client import ClientOptions, close_pool
    from ghbot.errors import ValidationFailed

    async with FakeGitHub(app_id=3, public_key_pem=public_pem) as fake:
        fake.add_installation(INSTALLATION, "Codertocat", ["Hello-World"])
        pull = fake.add_pull_request(REPO, "A fix")
        app = GitHubApp(AppAuth(3, pem_pkcs8), options=ClientOptions(base_url=fake.url))
        gh = app.installation(INSTALLATION)
        with pytest.raises(ValidationFailed) as caught:
            await gh.rest.pulls.create_review(
                owner="Codertocat", repo="Hello-World", pull_number=pull["number"], event="COMMENT"
            )
        assert caught.value.errors == ["Review Can't be blank"]
        await close_pool()
