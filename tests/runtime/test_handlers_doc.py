"""docs/handlers.md: its snippets are one module that passes `mypy --strict` and does
what the page says, one delivery per handler through the test harness (no Ray) against
FakeGitHub.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from actors.testing import BotHarness
from ghbot.client import GitHubApp
from ghbot.testing import FakeGitHub
from tests.docs import python_blocks
from tests.runtime.conftest import INSTALLATION

ROOT = Path(__file__).resolve().parents[2]
REPO = "Codertocat/Hello-World"


def module_source() -> str:
    """Return the page's Python blocks, in order, joined: the `Chores` bot module."""
    return "\n".join(python_blocks("docs/handlers.md"))


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


async def test_each_handler_does_what_the_page_says(chores: tuple[Path, ModuleType]) -> None:
    async with BotHarness(chores[1].Chores) as bot:
        fake = bot.fake
        issue = fake.add_issue(REPO, "A bug")
        pull = fake.add_pull_request(REPO, "A fix", head_sha="b" * 40)
        done = [
            await bot.deliver("issues.opened", issue__number=issue["number"]),
            await bot.deliver(
                "pull_request.opened",
                pull_request__number=pull["number"],
                pull_request__draft=True,
                pull_request__head__sha="b" * 40,
            ),
            await bot.deliver("check_suite.requested", check_suite__id=77),
            await bot.deliver("push", after="c" * 40, deleted=False),
        ]
        assert [d.status for d in done] == ["accepted"] * 4
        assert [d.dead_letters for d in done] == [[]] * 4

        # thank: one comment on the issue, naming the sender.
        base = f"/repos/{REPO}"
        [comment] = fake.requests_to(f"{base}/issues/{issue['number']}/comments", "POST")
        assert comment.json["body"].startswith("Thanks, @Codertocat!")

        # triage: labels (draft too), then a COMMENT review pinned to the head.
        [labels] = fake.requests_to(f"{base}/issues/{pull['number']}/labels", "POST")
        assert labels.json == {"labels": ["needs-review", "draft"]}
        [review] = fake.requests_to(f"{base}/pulls/{pull['number']}/reviews", "POST")
        assert review.json["event"] == "COMMENT" and review.json["commit_id"] == "b" * 40
        repo = fake.store.repo("Codertocat", "Hello-World")
        assert repo is not None and repo.reviews[pull["number"]][0]["state"] == "COMMENTED"

        # check: a run created in progress with the external_id, then completed.
        [created] = fake.requests_to(f"{base}/check-runs", "POST")
        assert created.json["external_id"] == "suite-77"
        assert created.json["status"] == "in_progress"
        [run] = repo.check_runs.values()
        assert (run["status"], run["conclusion"]) == ("completed", "success")
        assert run["external_id"] == "suite-77"
        # ... and again when someone asks for the suite to run again.
        again = await bot.deliver("check_suite.rerequested", check_suite__id=78)
        assert again.dead_letters == []
        [created] = again.requests_to(f"{base}/check-runs", "POST")
        assert created.json["external_id"] == "suite-78"
        [rerun] = [r for r in repo.check_runs.values() if r["external_id"] == "suite-78"]
        assert (rerun["status"], rerun["conclusion"]) == ("completed", "success")

        # mark: a success status on the pushed commit.
        [status] = fake.requests_to(f"{base}/statuses/{'c' * 40}", "POST")
        assert status.json["state"] == "success" and status.json["context"] == "chores/push"

        # relabel: the repository's .github/chores.yml says which label; a broken one
        # is a failing check run on the head, and nothing else.
        sync = {
            "number": pull["number"],
            "pull_request__number": pull["number"],
            "pull_request__head__sha": "d" * 40,
        }
        fake.add_file(REPO, ".github/chores.yml", "label_updates: updated\n")
        relabelled = await bot.deliver("pull_request.synchronize", **sync)
        [label] = relabelled.requests_to(f"{base}/issues/{pull['number']}/labels", "POST")
        assert label.json == {"labels": ["updated"]}
        fake.add_file(REPO, ".github/chores.yml", "label_updates: [not, a, string]\n")
        broken = await bot.deliver("pull_request.synchronize", **sync)
        assert broken.dead_letters == []
        assert broken.requests_to(f"{base}/issues/{pull['number']}/labels", "POST") == []
        [failed] = broken.requests_to(f"{base}/check-runs", "POST")
        assert failed.json["conclusion"] == "failure" and failed.json["head_sha"] == "d" * 40
        assert failed.json["output"]["title"] == ".github/chores.yml cannot be used"
        assert "Expected `str | null`, got `array`" in failed.json["output"]["summary"]


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
