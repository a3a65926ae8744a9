"""Bot code over `GitHub.rest`; `tests/unit/test_rest_types.py` runs `mypy --strict` on it.

No `getattr`, no `cast`: parameters, answers and paged items are typed.
"""

from __future__ import annotations

from ghbot.client import GitHub
from ghbot.events import IssueParams
from ghbot.rest.models import CheckRun, IssueComment


async def answer(gh: GitHub, issue: IssueParams) -> IssueComment:
    comment = await gh.rest.issues.create_comment(**issue, body="Thanks!")
    labels = await gh.rest.issues.add_labels(**issue, labels=["triage"])
    names: list[str] = [label.name for label in labels]
    await gh.rest.issues.update(**issue, state="closed", state_reason="completed")
    await gh.rest.reactions.create_for_issue_comment(
        owner=issue["owner"], repo=issue["repo"], comment_id=comment.id, content="heart"
    )
    assert names
    return comment


async def titles(gh: GitHub, owner: str, repo: str) -> list[str]:
    issues = gh.rest.paginate(gh.rest.issues.list_for_repo, owner=owner, repo=repo, state="all")
    return [issue.title async for issue in issues]


async def runs(gh: GitHub, owner: str, repo: str, ref: str) -> list[CheckRun]:
    pages = gh.rest.paginate(gh.rest.checks.list_for_ref, owner=owner, repo=repo, ref=ref)
    return [run async for run in pages if run.conclusion == "failure"]


async def check(gh: GitHub, owner: str, repo: str, sha: str) -> int:
    run = await gh.rest.checks.create(
        owner=owner, repo=repo, name="lint", head_sha=sha, external_id="job-1"
    )
    await gh.rest.checks.update(
        owner=owner, repo=repo, check_run_id=run.id, conclusion="success",
        output={"title": "Lint", "summary": "clean"},
    )  # fmt: skip
    return run.id
