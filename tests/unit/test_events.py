"""`ghbot.events`: GitHub's published webhook examples decode into typed events."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ghbot import events
from ghbot.errors import MalformedPayload, UnknownEventError
from ghbot.events import Envelope, Event, check_name, decode_envelope, parse
from ghbot.models import (
    ACTION_TYPES,
    KNOWN_EVENTS,
    OPEN_ACTION_EVENTS,
    PAYLOAD_TYPES,
    CheckRunCompleted,
    IssuesEdited,
    IssuesOpened,
    PullRequestOpened,
    PushPayload,
    RepositoryWebhooks,
    SimpleUser,
    UnknownPayload,
)
from ghbot.testing.payloads import EXAMPLES

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
WEBHOOKS = sorted(EXAMPLES.glob("*.json"))
GENERATED = ROOT / "ghbot" / "models" / "_generated.py"


def body_of(stem: str) -> bytes:
    return (EXAMPLES / f"{stem}.json").read_bytes()


def expected_number(data: dict[str, Any]) -> int | None:
    for key in ("issue", "pull_request"):
        if isinstance(data.get(key), dict) and data[key].get("number") is not None:
            return int(data[key]["number"])
    return data.get("number")


# --- every fixture ----------------------------------------------------------------------


def test_fixtures_are_all_there() -> None:
    assert len(WEBHOOKS) >= 60


@pytest.mark.parametrize("path", WEBHOOKS, ids=lambda p: p.stem)
def test_every_fixture_parses_into_its_typed_payload(path: Path) -> None:
    name, _, action = path.stem.partition(".")
    body = path.read_bytes()
    data = json.loads(body)

    event = parse(name, body, delivery_id="d-1")

    assert (event.name, event.action, event.qualified_name) == (name, action or None, path.stem)
    assert type(event.payload) is (ACTION_TYPES[path.stem] if action else PAYLOAD_TYPES[name])
    assert event.raw is body
    assert event.delivery_id == "d-1"
    assert event.installation_id == (data.get("installation") or {}).get("id")
    if data.get("repository") is None:
        assert event.repository is None
    else:
        repo = data["repository"]
        assert event.repository is not None
        assert event.repository.id == repo["id"]
        assert event.repository.full_name == repo["full_name"]
        assert event.repository.owner.login == repo["owner"]["login"]
    if data.get("sender") is None:
        assert event.sender is None
    else:
        assert event.sender is not None
        assert event.sender.login == data["sender"]["login"]


@pytest.mark.parametrize("path", WEBHOOKS, ids=lambda p: p.stem)
def test_every_fixture_decodes_its_envelope(path: Path) -> None:
    body = path.read_bytes()
    data = json.loads(body)

    envelope = decode_envelope(body)

    assert envelope.action == data.get("action")
    assert envelope.installation_id == (data.get("installation") or {}).get("id")
    assert envelope.number == expected_number(data)
    assert envelope.sender == (
        None if data.get("sender") is None else events.UserRef(data["sender"]["login"])
    )
    if data.get("repository") is None:
        assert envelope.repository is None
    else:
        assert envelope.repository is not None
        assert envelope.repository.id == data["repository"]["id"]
        assert envelope.repository.full_name == data["repository"]["full_name"]
        assert envelope.repository.owner.login == data["repository"]["owner"]["login"]


@pytest.mark.parametrize("path", WEBHOOKS, ids=lambda p: p.stem)
def test_every_fixture_name_is_known(path: Path) -> None:
    name = path.stem.partition(".")[0]
    check_name(name)
    check_name(path.stem)


# --- typed access, deep ------------------------------------------------------------------


def test_issues_opened_is_typed() -> None:
    event = parse("issues", body_of("issues.opened"))
    payload = event.payload
    assert isinstance(payload, IssuesOpened)
    assert payload.issue.number == 1
    assert payload.issue.user is not None
    assert payload.issue.user.login == "Codertocat"
    assert payload.issue.reactions is not None
    assert payload.issue.reactions.plus_one == 0  # JSON "+1"


def test_issues_edited_changes_are_typed() -> None:
    data = json.loads(body_of("issues.edited"))
    data["changes"] = {"title": {"from": "Old title"}, "body": {"from": "Old body"}}
    payload = parse("issues", json.dumps(data).encode()).payload
    assert isinstance(payload, IssuesEdited)
    assert payload.changes is not None
    assert payload.changes.title is not None
    assert payload.changes.title.from_ == "Old title"


def test_pull_request_opened_is_typed() -> None:
    data = json.loads(body_of("pull_request.opened"))
    payload = parse("pull_request", body_of("pull_request.opened")).payload
    assert isinstance(payload, PullRequestOpened)
    assert payload.number == data["number"]
    assert payload.pull_request.number == data["number"]
    assert payload.pull_request.head.sha == data["pull_request"]["head"]["sha"]
    assert payload.pull_request.links.html.href == data["pull_request"]["_links"]["html"]["href"]


@pytest.mark.parametrize(
    "action",
    ["opened", "closed", "reopened", "ready_for_review", "converted_to_draft", "synchronize"],
)
def test_a_pull_request_whose_head_fork_was_deleted_still_decodes(action: str) -> None:
    # GitHub sends `head.repo: null` once the fork is gone (and may leave out the
    # head's user and label); a handler of any kind must still get the delivery.
    data = json.loads(body_of(f"pull_request.{action}"))
    data["pull_request"]["head"].update(repo=None, user=None)
    del data["pull_request"]["head"]["label"]
    head = parse("pull_request", json.dumps(data).encode()).payload.pull_request.head
    assert (head.repo, head.user, head.label) == (None, None, None)
    assert head.sha == data["pull_request"]["head"]["sha"]


def test_push_is_typed() -> None:
    data = json.loads(body_of("push"))
    data["commits"] = [data["head_commit"]]  # the published example pushed no commits
    event = parse("push", json.dumps(data).encode())
    payload = event.payload
    assert isinstance(payload, PushPayload)
    assert event.action is None and event.qualified_name == "push"
    assert payload.commits[0].id == data["head_commit"]["id"]
    assert payload.ref == "refs/tags/simple-tag"
    assert payload.repository.created_at == 1557933565  # an int in push, a string elsewhere


def test_check_run_is_typed() -> None:
    payload = parse("check_run", body_of("check_run.completed")).payload
    assert isinstance(payload, CheckRunCompleted)
    assert (payload.check_run.status, payload.check_run.conclusion) == ("completed", "failure")


def test_envelope_fields_share_one_type_in_every_payload() -> None:
    plain = [kind for event, kind in PAYLOAD_TYPES.items() if not KNOWN_EVENTS[event]]
    for kind in [*ACTION_TYPES.values(), *plain]:
        hints = typing.get_type_hints(kind)
        repository = hints.get("repository", RepositoryWebhooks)
        assert repository in (RepositoryWebhooks, RepositoryWebhooks | None), kind
        assert hints.get("sender", SimpleUser) in (SimpleUser, SimpleUser | None), kind
    for name, kind in ACTION_TYPES.items():
        assert "action" not in typing.get_type_hints(kind), name  # it is the tag
        assert kind.__struct_config__.tag_field == "action", name
        assert kind.__struct_config__.tag == name.partition(".")[2], name


# --- unknown events, malformed bodies ------------------------------------------------------


def test_unknown_event_parses_generically_and_keeps_the_body() -> None:
    body = body_of("issues.opened")
    event = parse("issue_dependencies", body)
    assert isinstance(event.payload, UnknownPayload)
    assert event.qualified_name == "issue_dependencies.opened"
    assert event.repository is not None
    assert event.repository.full_name == "Codertocat/Hello-World"
    assert event.sender is not None and event.sender.login == "Codertocat"
    assert event.raw is body
    assert json.loads(event.raw)["issue"]["number"] == 1


def test_decoders_are_cached_for_known_names_only() -> None:
    parse("issues", body_of("issues.opened"))
    parse("not-an-event-1", b"{}")
    assert "issues" in events._DECODERS
    assert "not-an-event-1" not in events._DECODERS


MALFORMED = [
    b"",
    b"not json",
    b'{"action": "opened"',
    b'{"a": 1} trailing',
    b"[1, 2]",
    b'"a string"',
    b"null",
    b"\xff\xfe",
    b"[" * 100_000,
    b'{"repository": {"id": "not an int", "full_name": "a/b", "owner": {"login": "a"}}}',
    b'{"sender": {"id": 1}}',
]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
@pytest.mark.parametrize("name", ["issues", "push", "never_heard_of_it"])
def test_malformed_body_raises_malformed_payload(name: str, body: bytes) -> None:
    with pytest.raises(MalformedPayload) as info:
        parse(name, body, delivery_id="d-9")
    assert info.value.http_status == 400
    assert info.value.delivery_id == "d-9"
    with pytest.raises(MalformedPayload):
        decode_envelope(body)


@pytest.mark.parametrize("name", ["issues", "never_heard_of_it"])
def test_a_field_of_the_wrong_type_raises_malformed_payload(name: str) -> None:
    with pytest.raises(MalformedPayload, match=r"\$\.action"):
        parse(name, b'{"action": 5}')
    with pytest.raises(MalformedPayload, match=r"\$\.action"):
        decode_envelope(b'{"action": 5}')
    data = json.loads(body_of("push")) | {"action": 5}
    parse("push", json.dumps(data).encode())  # push has no action: the field is ignored


def test_envelope_number_prefers_issue_then_pull_request_then_top_level() -> None:
    assert decode_envelope(b'{"number": 3}').number == 3
    assert decode_envelope(b'{"number": 3, "pull_request": {"number": 2}}').number == 2
    body = b'{"number": 3, "pull_request": {"number": 2}, "issue": {"number": 1}}'
    assert decode_envelope(body).number == 1
    assert decode_envelope(b'{"issue": {}, "pull_request": {"number": 2}}').number == 2
    assert decode_envelope(b"{}") == Envelope()


def test_a_body_nested_too_deeply_raises_malformed_payload() -> None:
    """Well-formed JSON nested past what the decoder recurses through (100,000 levels,
    in a field the model skips) is refused, not a `RecursionError` out of `parse`."""
    deep = b'{"action": "opened", "extra": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(MalformedPayload, match="nested too deeply") as info:
        parse("issues", deep, delivery_id="d-deep")
    assert info.value.delivery_id == "d-deep"


def test_a_known_event_without_its_action_is_malformed_not_unknown() -> None:
    """An `issues` body with no `action` is not a new action the models lack."""
    with pytest.raises(MalformedPayload, match="action"):
        parse("issues", b'{"issue": {"number": 1}}')


# --- names -------------------------------------------------------------------------------


def test_known_events_come_from_the_schema() -> None:
    assert set(KNOWN_EVENTS) == set(PAYLOAD_TYPES)
    assert len(KNOWN_EVENTS) >= 60
    assert {"opened", "closed", "edited"} <= KNOWN_EVENTS["issues"]
    assert KNOWN_EVENTS["push"] == frozenset()
    assert frozenset({"repository_dispatch"}) == OPEN_ACTION_EVENTS


@pytest.mark.parametrize(
    "name", ["*", "issues", "issues.opened", "push", "check_run.completed", "repository_dispatch.x"]
)
def test_check_name_accepts(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("issues.opend", "did you mean 'issues.opened'"),
        # up to three of the event's own names (not `check_suite.requested`)
        (
            "check_run.requested",
            "did you mean 'check_run.rerequested' or 'check_run.requested_action' or "
            "'check_run.created'?",
        ),
        ("isues", "did you mean 'issues'"),
        ("pull_request.open", "did you mean 'pull_request.opened'"),
        ("push.opened", "'push' has no actions; did you mean 'push'"),
        ("issues.", "has no action ''"),
        ("issues.opened.now", "has no action 'opened.now'"),
        ("repository_dispatch.", "has no action ''"),
        ("zzzz", "unknown webhook event 'zzzz'; see https://docs.github.com/"),
        ("", "unknown webhook event ''"),
    ],
)
def test_check_name_rejects_with_a_suggestion(name: str, message: str) -> None:
    with pytest.raises(UnknownEventError, match=re.escape(message)):
        check_name(name)


# --- the generated models ------------------------------------------------------------------


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_models", ROOT / "scripts" / "gen_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_generated_models_are_up_to_date() -> None:
    fresh = _generator().generate(FIXTURES / "webhooks-api.github.com.json")
    assert fresh == GENERATED.read_text(), "run: python scripts/gen_models.py"


def test_generated_models_are_ruff_formatted() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    source = GENERATED.read_text()
    argv = [ruff, "format", "--stdin-filename", str(GENERATED), "-"]
    done = subprocess.run(argv, input=source, capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout == source


def test_importing_events_does_not_import_the_models() -> None:
    code = "import sys, ghbot.events; print('ghbot.models' in sys.modules)"
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# --- any JSON object ---------------------------------------------------------------------

# Keys the models type, so that random values reach typed fields, and any others.
TYPED_KEYS = ["action", "installation", "repository", "sender", "issue", "pull_request"]
TYPED_KEYS += ["number", "id", "login", "full_name", "owner", "commits", "head", "sha"]
KEYS = st.sampled_from([*TYPED_KEYS, "+1", "_links", "from"]) | st.text(max_size=6)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=25,
)
NAMES = st.sampled_from(sorted(KNOWN_EVENTS)) | st.text(max_size=12)


@settings(max_examples=300, deadline=None)
@given(name=NAMES, data=st.dictionaries(KEYS, VALUES, max_size=8))
def test_any_json_object_parses_or_raises_malformed_payload(
    name: str, data: dict[str, Any]
) -> None:
    body = json.dumps(data).encode()
    try:
        event = parse(name, body)
    except MalformedPayload:
        pass
    else:
        assert isinstance(event, Event) and event.raw is body
    with contextlib.suppress(MalformedPayload):
        decode_envelope(body)


@settings(max_examples=200, deadline=None)
@given(name=NAMES, body=st.binary(max_size=64))
def test_any_bytes_parse_or_raise_malformed_payload(name: str, body: bytes) -> None:
    with contextlib.suppress(MalformedPayload):
        parse(name, body)
    with contextlib.suppress(MalformedPayload):
        decode_envelope(body)
