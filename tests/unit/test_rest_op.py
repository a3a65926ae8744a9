"""`ghbot.rest.operation.Op`: arguments to path, query and body, answers to types (no I/O)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from ghbot.client import Response
from ghbot.errors import GitHubError, UsageError
from ghbot.rest.models import Label
from ghbot.rest.namespaces.git import _UPDATE_REF
from ghbot.rest.namespaces.issues import _LIST_FOR_REPO, _UPDATE
from ghbot.rest.namespaces.search import _CODE
from ghbot.rest.operation import Op, at_base

UNSET = msgspec.UNSET


def _answer(data: Any, status: int = 200) -> Response:
    return Response(status, {}, data, method="GET", url="https://api.github.com/x")


def test_path_values_are_encoded_but_for_slashes() -> None:
    args = {"owner": "o", "repo": "r", "ref": "heads/feature x", "sha": "1", "force": UNSET}
    assert _UPDATE_REF.url(args) == "/repos/o/r/git/refs/heads/feature%20x"
    with pytest.raises(UsageError, match="needs 'repo'"):
        _UPDATE_REF.url({"owner": "o"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ref", "heads/../../../../other"),  # DELETE /repos/o/other, with the token
        ("ref", "heads/./x"),
        ("ref", ".."),
        ("owner", None),  # sent as /repos/None/...: GitHub's 404, not a usage error
    ],
)
def test_a_path_value_that_would_move_the_path_is_refused(name: str, value: Any) -> None:
    args = {"owner": "o", "repo": "r", "ref": "heads/main", "sha": "1", name: value}
    with pytest.raises(UsageError, match=f"{name}=.* cannot be in a path"):
        _UPDATE_REF.url(args)


def test_query_drops_none_and_joins_sequences() -> None:
    args = {"owner": "o", "repo": "r", "labels": ["bug", "ui"], "state": None, "per_page": 5}
    assert _LIST_FOR_REPO.query(args) == {"labels": "bug,ui", "per_page": 5}
    assert _CODE.query({"q": "x"}) == {"q": "x"}


def test_body_holds_what_was_given_and_none_is_sent_as_null() -> None:
    args = {"owner": "o", "repo": "r", "issue_number": 1, "title": UNSET, "milestone": None}
    args |= {name: UNSET for name in _UPDATE.in_body if name not in args}
    assert _UPDATE.body(args) == {"milestone": None}
    assert _UPDATE.body({n: UNSET for n in _UPDATE.in_body}) is UNSET


def test_wire_names_and_unknown_arguments() -> None:
    op = Op("GET", "/search", in_query=("in_",), wire={"in_": "in"})
    assert op.query({"in_": "title"}) == {"in": "title"}
    with pytest.raises(UsageError, match="takes no"):
        op.check({"colour": "red"})


def test_answers_decode_to_the_operation_types() -> None:
    op = Op("GET", "/labels", items=Label, returns=list[Label])
    labels = op.decode(_answer([{"id": 1, "name": "bug", "color": "f00", "extra": True}]))
    assert labels == [Label(id=1, name="bug", color="f00")]
    assert labels[0].node_id is None, "a required field GitHub left out reads None"
    assert Op("GET", "/x", returns=Any).decode(_answer({"a": 1})) == {"a": 1}
    assert Op("DELETE", "/x", returns=None).decode(_answer(None, 204)) is None


def test_an_answer_that_does_not_fit_raises_with_its_data() -> None:
    op = Op("GET", "/labels", returns=list[Label])
    with pytest.raises(GitHubError, match="does not fit") as caught:
        op.decode(_answer([{"id": "one"}]))
    assert caught.value.data == [{"id": "one"}] and caught.value.status == 200
    # A URL with a user and password (a client without credentials) shows neither.
    answer = Response(200, {}, [{"id": "one"}], method="GET", url="https://me:pw@ghe.example/x")
    with pytest.raises(GitHubError) as caught:
        op.decode(answer)
    assert caught.value.url == "https://ghe.example/x" and "pw" not in str(caught.value)


def test_an_access_token_answer_that_is_no_json_object_is_githubs_error() -> None:
    from ghbot.client.app import _token_of

    page = "<html>Proxy error</html>"
    answer = Response(201, {}, page, method="POST", url="https://me:pw@proxy.example/t")
    with pytest.raises(GitHubError, match="not a JSON object") as caught:
        _token_of(answer, 1, 0.0)
    assert caught.value.url == "https://proxy.example/t" and caught.value.data is None


def test_uploads_go_where_the_clients_github_takes_them() -> None:
    path = "https://uploads.github.com/repos/o/r/releases/1/assets"
    assert at_base(path, "https://api.github.com") == path
    ghes = "https://ghe.example.com/api/uploads/repos/o/r/releases/1/assets"
    assert at_base(path, "https://ghe.example.com/api/v3") == ghes
    assert (
        at_base(path, "http://127.0.0.1:8080")
        == "http://127.0.0.1:8080/repos/o/r/releases/1/assets"
    )
    assert at_base("/repos/o/r", "https://ghe.example.com/api/v3") == "/repos/o/r"


def test_an_answer_holding_a_token_or_a_key_shows_neither_in_its_repr() -> None:
    from ghbot.rest.models import InstallationToken
    from ghbot.rest.namespaces.apps import AppsCreateFromManifest

    token = InstallationToken(token="ghs_16C7e42F292c6912E7710c838347Ae178B4a", expires_at="x")
    assert "ghs_16C7e42F292c6912E7710c838347Ae178B4a" not in repr(token)
    assert "token='ghs_…8B4a'" in repr(token) and "expires_at='x'" in repr(token)
    app = msgspec.convert(
        {
            "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIE...",
            "webhook_secret": "s" * 40,
            "client_secret": "c" * 40,
            "id": 7,
        },
        AppsCreateFromManifest,
    )
    assert "BEGIN" not in repr(app) and "s" * 20 not in repr(app) and "c" * 20 not in repr(app)
    assert "id=7" in repr(app)
