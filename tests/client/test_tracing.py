"""The client's spans: one per request, one per token asked of the cache."""

from __future__ import annotations

import pytest
from opentelemetry.trace import StatusCode

from ghbot.client import ClientOptions, GitHub, GitHubApp
from ghbot.errors import NotFound
from ghbot.testing import FakeGitHub
from tests.client.conftest import REPO, scripted_server
from tests.tracing import recorder


async def test_requests_and_tokens_are_spans_with_design_attributes(
    fake: FakeGitHub, app: GitHubApp
) -> None:
    spans = recorder()
    gh = app.installation(1)
    await gh.request("GET", f"/repos/{REPO}")
    await gh.request("GET", f"/repos/{REPO}")
    with pytest.raises(NotFound):
        await gh.request("GET", "/repos/octo-org/missing")
    finished = spans.get_finished_spans()

    tokens = [s for s in finished if s.name == "GitHub installation token"]
    assert [s.attributes and s.attributes["auth.cache_hit"] for s in tokens] == [False, True, True]
    assert all(s.attributes and s.attributes["github.installation_id"] == 1 for s in tokens)
    # The first token was exchanged with the app's JWT: that request is inside it.
    [exchange] = [s for s in finished if s.name == "GitHub POST"]
    assert exchange.parent is not None and exchange.parent.span_id == tokens[0].context.span_id

    gets = [s for s in finished if s.name == "GitHub GET"]
    assert len(gets) == 3
    ok = gets[0].attributes or {}
    assert ok["github.api.method"] == "GET" and ok["github.api.endpoint"] == f"/repos/{REPO}"
    assert ok["http.response.status_code"] == 200
    assert isinstance(ok["github.rate_limit.remaining"], int)
    assert tokens[0].parent is not None and tokens[0].parent.span_id == gets[0].context.span_id
    # The error says its type only: its text names the URL (and could its query).
    failed = gets[2]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "NotFound"
    assert (failed.attributes or {})["error.type"] == "NotFound"
    assert failed.events == ()


def test_a_failed_signature_s_span_says_its_error_type_only(
    pem_pkcs8: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `jwt sign` span used OpenTelemetry's defaults, which record the exception's
    message and traceback as an event: its error type only, as every ghbot span."""
    import jwt as pyjwt

    from ghbot.auth import AppAuth

    def broken(*args: object, **kwargs: object) -> str:
        raise ValueError("secret-looking detail of the key")

    spans = recorder()
    monkeypatch.setattr(pyjwt, "encode", broken)
    with pytest.raises(ValueError):
        AppAuth(1, pem_pkcs8).jwt()
    [signed] = [s for s in spans.get_finished_spans() if s.name == "jwt sign"]
    assert signed.status.status_code is StatusCode.ERROR
    assert signed.status.description == "ValueError" and signed.events == ()


async def test_a_remaining_count_that_is_not_ascii_digits_is_left_off_the_span(
    options: ClientOptions,
) -> None:
    """`"²".isdigit()` is true and `int("²")` raises: with tracing on, an answer whose
    `x-ratelimit-remaining` said `²` made the request raise ValueError."""
    spans = recorder()
    async with scripted_server() as server:
        odd = {"x-ratelimit-remaining": "²", "content-type": "application/json"}
        server.answers.append((200, odd, b"{}"))
        gh = GitHub(token="ghs_tracing", base_url=server.url, options=options)
        assert (await gh.request("GET", f"/repos/{REPO}")).status == 200
    [get] = [s for s in spans.get_finished_spans() if s.name == "GitHub GET"]
    assert "github.rate_limit.remaining" not in (get.attributes or {})
