"""The example bot, through the test harness (no Ray) and the real client against FakeGitHub."""

from __future__ import annotations

import json
import logging

import pytest

import actors.bot
from actors.bot import ordering_key
from actors.testing import BotHarness
from examples.greeter import Greeter
from ghbot.events import decode_envelope
from ghbot.logs import LogLimiter
from ghbot.testing.payloads import example_payload
from tests.runtime.conftest import INSTALLATION
from tests.tracing import recorder

REPO = "/repos/Codertocat/Hello-World"


async def test_greeter_comments_labels_and_counts() -> None:
    spans = recorder()
    async with BotHarness(Greeter, installation_id=INSTALLATION) as bot:
        issue = bot.fake.add_issue("Codertocat/Hello-World", "A bug")
        pull = bot.fake.add_pull_request("Codertocat/Hello-World", "A fix")
        opened = await bot.deliver("issues.opened", issue__number=issue["number"])
        labelled = await bot.deliver("pull_request.opened", pull_request__number=pull["number"])
        assert (opened.status, labelled.status) == ("accepted", "accepted")
        comments = opened.requests_to(f"{REPO}/issues/{issue['number']}/comments", "POST")
        assert len(comments) == 1
        assert comments[0].json["body"].startswith("Thanks for opening this issue")
        labels = labelled.requests_to(f"{REPO}/issues/{pull['number']}/labels", "POST")
        assert [r.json for r in labels] == [{"labels": ["needs-review"]}]
        assert await bot.state() == {"Codertocat/Hello-World": 1}

        # One span per delivery, its GitHub requests (and their tokens) inside it.
        finished = spans.get_finished_spans()
        [root] = [s for s in finished if s.name == "issues.opened"]
        assert root.attributes is not None and root.parent is None
        assert root.attributes["github.installation_id"] == INSTALLATION
        assert root.attributes["github.repository"] == "Codertocat/Hello-World"
        assert root.attributes["github.delivery_id"] == opened.delivery_id
        inside = [s for s in finished if s.context.trace_id == root.context.trace_id]
        posts = [s for s in inside if s.name == "GitHub POST"]
        endpoints = {s.attributes["github.api.endpoint"] for s in posts if s.attributes}
        assert f"{REPO}/issues/{issue['number']}/comments" in endpoints
        assert {s.attributes["http.response.status_code"] for s in posts if s.attributes} == {201}
        assert all(s.parent is not None for s in inside if s is not root)
        tokens = [s for s in inside if s.name == "GitHub installation token"]
        assert tokens and all(s.attributes and "auth.cache_hit" in s.attributes for s in tokens)
        text = repr([dict(s.attributes or {}) for s in finished])
        assert "ghs_" not in text and "Bearer" not in text


class BadlyOrdered(Greeter):
    """An ordering function that returns an int (the issue's number), not a string."""

    ordering = staticmethod(lambda name, envelope: envelope.number)  # type: ignore[assignment]


async def test_an_ordering_function_that_returns_no_string_orders_by_issue(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It failed the whole batch it came in (every installation's deliveries in it).
    monkeypatch.setattr(actors.bot, "_ORDERING_LOGGED", LogLimiter(burst=2, per=60.0))
    async with BotHarness(BadlyOrdered, installation_id=INSTALLATION) as bot:
        issue = bot.fake.add_issue("Codertocat/Hello-World", "A bug")
        with caplog.at_level(logging.WARNING, logger="ghbot.bot"):
            opened = await bot.deliver("issues.opened", issue__number=issue["number"])
        assert opened.status == "accepted"
        assert len(opened.requests_to(f"{REPO}/issues/{issue['number']}/comments", "POST")) == 1
    assert "the bot's ordering function returned int for issues, not a string" in caplog.text
    # One that raises is ordered the same way (it was a 500 at the ingress), by its
    # issue: the key "" (its installation's) ordered it against no delivery of another
    # key, so a comment ran beside its issue's `opened`.
    envelope = decode_envelope(json.dumps(example_payload("issues.opened")).encode())
    by_issue = ordering_key("issue", "issues", envelope)
    assert by_issue.endswith(f"#{envelope.number}")
    with caplog.at_level(logging.WARNING, logger="ghbot.bot"):
        assert ordering_key(lambda name, envelope: str(1 // 0), "issues", envelope) == by_issue
    assert "the bot's ordering function raised ZeroDivisionError for issues:" in caplog.text
    assert "ordered by its issue, as by default" in caplog.text


async def test_a_pull_request_delivered_for_a_number_the_harness_filled_is_one() -> None:
    # Issue 3 made issues 1 and 2 to reach its number; the example pull request is #2,
    # which stayed a plain issue (its `GET /pulls/2` answered 404).
    async with BotHarness(Greeter, installation_id=INSTALLATION) as bot:
        await bot.deliver("issues.opened", issue__number=3)
        number = example_payload("pull_request.opened")["number"]
        assert number < 3
        await bot.deliver("pull_request.opened")
        repo = bot.fake.store.repo("Codertocat", "Hello-World")
        assert repo is not None and number in repo.pulls and 3 not in repo.pulls
