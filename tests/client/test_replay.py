"""The client against GitHub's recorded answers (`@octokit/fixtures`, tests/fixtures/api).

Each scenario is replayed by a server that checks every request against the recording:
the client must send the recorded method, path, query, body, authorization, Accept and
Content-Type, and must read the recorded status, headers and bodies (JSON, raw text,
HTML, empty 204/205).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ghbot.client import ClientOptions, ETagCache, GitHub, Response
from ghbot.errors import NotFound, ValidationFailed
from ghbot.retry import RetryPolicy

from .replay import FIXTURES, JSON_TYPES, Replay, load

SCENARIOS = sorted(p.name for p in FIXTURES.glob("*.json"))


def test_every_recorded_scenario_is_replayed() -> None:
    assert len(SCENARIOS) == 15


async def _send(gh: GitHub, exchange: dict[str, Any]) -> Response:
    """Send what the recorded client sent, the way a bot would call `request`."""
    wanted = exchange["reqheaders"]
    headers = {}
    if wanted.get("accept") not in JSON_TYPES:
        headers["Accept"] = wanted["accept"]
    recorded = exchange.get("body", "")
    if isinstance(recorded, dict | list):
        return await gh.request(
            exchange["method"], exchange["path"], json=recorded, headers=headers
        )
    if recorded:
        headers["Content-Type"] = wanted["content-type"]
        return await gh.request(
            exchange["method"], exchange["path"], body=recorded, headers=headers
        )
    return await gh.request(exchange["method"], exchange["path"], headers=headers)


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_recorded_scenario(scenario: str) -> None:
    exchanges = load(scenario)
    async with Replay(exchanges) as server:
        options = ClientOptions(
            base_url=server.url,
            etags=ETagCache(),
            pace_writes=None,
            retry=RetryPolicy(max_retries=0),
        )
        clients: dict[str, GitHub] = {}
        for exchange in exchanges:
            token = exchange["reqheaders"]["authorization"].split(" ", 1)[1]
            gh = clients.setdefault(token, GitHub(token=token, options=options))
            answer = await _send(gh, exchange)
            assert server.mismatches == []
            assert answer.status == exchange["status"]
            recorded = exchange["response"]
            assert answer.data == (recorded if recorded != "" else None)
            for name in ("etag", "location", "x-github-request-id", "x-ratelimit-remaining"):
                if name in exchange["headers"]:
                    assert answer.headers[name] == str(exchange["headers"][name])
        assert server.served == len(exchanges)
    for gh in clients.values():
        assert gh.budgets.core.remaining <= 4999


async def test_a_recorded_get_is_sent_again_with_if_none_match() -> None:
    exchanges = load("add-and-remove-repository-collaborator.json")
    gets = [e for e in exchanges if e["method"] == "get" and e["path"].endswith("/collaborators")]
    async with Replay(gets) as server:
        options = ClientOptions(base_url=server.url, etags=ETagCache())
        gh = GitHub(token="0000000000000000000000000000000000000001", options=options)
        first = await gh.request("GET", gets[0]["path"])
        second = await gh.request("GET", gets[1]["path"])
    assert [u["login"] for u in first.data] == ["octokit-fixture-user-a", "octokit-fixture-user-b"]
    assert [u["login"] for u in second.data] == ["octokit-fixture-user-a"]
    assert not second.cached


# GitHub's documented answers for what the recordings lack: a 422 with its errors list, a
# 404, and a paginated list with `Link` (written in the recordings' format; `{base}` is the
# replay server).
DOCUMENTED: list[dict[str, Any]] = [
    {
        "method": "post",
        "path": "/repos/octo-org/hello-world/issues",
        "body": {"body": "no title"},
        "reqheaders": {
            "authorization": "token ghs_documented",
            "accept": "application/vnd.github+json",
        },
        "status": 422,
        "headers": {
            "content-type": "application/json; charset=utf-8",
            "x-github-request-id": "A:B:C",
        },
        "response": {
            "message": "Validation Failed",
            "errors": [{"resource": "Issue", "code": "missing_field", "field": "title"}],
            "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue",
        },
    },
    {
        "method": "get",
        "path": "/repos/octo-org/missing",
        "body": "",
        "reqheaders": {
            "authorization": "token ghs_documented",
            "accept": "application/vnd.github+json",
        },
        "status": 404,
        "headers": {
            "content-type": "application/json; charset=utf-8",
            "x-github-request-id": "D:E:F",
        },
        "response": {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"},
    },
    {
        "method": "get",
        "path": "/repos/octo-org/hello-world/issues?per_page=1",
        "body": "",
        "reqheaders": {
            "authorization": "token ghs_documented",
            "accept": "application/vnd.github+json",
        },
        "status": 200,
        "headers": {
            "content-type": "application/json; charset=utf-8",
            "link": '<{base}/repositories/1300192/issues?per_page=1&page=2>; rel="next", '
            '<{base}/repositories/1300192/issues?per_page=1&page=2>; rel="last"',
        },
        "response": [{"number": 2}],
    },
    {
        "method": "get",
        "path": "/repositories/1300192/issues?per_page=1&page=2",
        "body": "",
        "reqheaders": {
            "authorization": "token ghs_documented",
            "accept": "application/vnd.github+json",
        },
        "status": 200,
        "headers": {"content-type": "application/json; charset=utf-8"},
        "response": [{"number": 1}],
    },
]


async def test_documented_errors_and_link_pagination() -> None:
    exchanges = copy.deepcopy(DOCUMENTED)
    async with Replay(exchanges) as server:
        for exchange in exchanges:
            link = exchange["headers"].get("link")
            if link:
                exchange["headers"]["link"] = link.replace("{base}", server.url)
        gh = GitHub(token="ghs_documented", options=ClientOptions(base_url=server.url))
        with pytest.raises(ValidationFailed) as invalid:
            await gh.request(
                "POST", "/repos/octo-org/hello-world/issues", json={"body": "no title"}
            )
        assert invalid.value.errors[0] == {
            "resource": "Issue",
            "code": "missing_field",
            "field": "title",
        }
        assert invalid.value.request_id == "A:B:C"
        with pytest.raises(NotFound):
            await gh.request("GET", "/repos/octo-org/missing")
        issues = gh.paginate("/repos/octo-org/hello-world/issues", params={"per_page": 1})
        assert [i["number"] async for i in issues] == [2, 1]
        assert server.mismatches == [] and server.served == 4
