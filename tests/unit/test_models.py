"""Every event and action of GitHub's official description: `@on` accepts it and `parse`
decodes a payload that fits its schema into its own struct.

The payloads are built here from the description itself
(`tests/fixtures/webhooks-api.github.com.json`): each schema's required fields,
recursively, with values of the right type.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from actors.bot import InstallationActor, on
from ghbot.events import parse
from ghbot.models import ACTION_TYPES, KNOWN_EVENTS, OPEN_ACTION_EVENTS, PAYLOAD_TYPES

SOURCE = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks-api.github.com.json"
REF = "#/components/schemas/"
Schema = dict[str, Any]


@cache
def description() -> Schema:
    return dict(json.loads(SOURCE.read_bytes()))


def hooks() -> list[tuple[str, str | None, Schema]]:
    """Return (event, action, payload schema) for every entry of the `webhooks` section."""
    out = []
    for entry in description()["webhooks"].values():
        post = entry["post"]
        event = post["x-github"]["subcategory"].replace("-", "_")
        schema = resolve(post["requestBody"]["content"]["application/json"]["schema"])
        variant = schema.get("oneOf", [schema])[0]
        action = variant["properties"].get("action")
        out.append((event, action["enum"][0] if action and "enum" in action else None, schema))
    return sorted(out, key=lambda h: (h[0], h[1] or ""))


def resolve(schema: Schema) -> Schema:
    while "$ref" in schema:
        schema = description()["components"]["schemas"][schema["$ref"].removeprefix(REF)]
    return schema


def example(schema: Schema, depth: int = 0) -> Any:
    """Return a value that fits `schema`: required properties only, first alternatives."""
    schema = resolve(schema)
    if depth > 40:
        raise AssertionError("the description nests required objects without end")
    for key in ("oneOf", "anyOf"):
        if key in schema:
            options = [s for s in schema[key] if resolve(s).get("type") != "null"]
            return example((options or schema[key])[0], depth + 1)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = example(part, depth + 1)
            merged |= value if isinstance(value, dict) else {}
        return merged
    if "enum" in schema and [v for v in schema["enum"] if v is not None]:
        return next(v for v in schema["enum"] if v is not None)
    if "const" in schema:
        return schema["const"]
    kinds = schema.get("type", "object")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    kind = next((k for k in kinds if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: example(props[k], depth + 1) for k in schema.get("required", []) if k in props}
    if kind == "array":
        return []
    simple = {"string": "2024-01-01T00:00:00Z", "integer": 1, "number": 1.5, "boolean": True}
    return simple.get(kind)


HOOKS = hooks()


def test_the_description_has_every_event_and_action() -> None:
    assert len(HOOKS) == 261
    assert len({event for event, _, _ in HOOKS}) == 75
    assert set(KNOWN_EVENTS) == {event for event, _, _ in HOOKS}
    assert set(ACTION_TYPES) == {f"{e}.{a}" for e, a, _ in HOOKS if a}
    for event in ["sub_issues", "issue_dependencies", "personal_access_token_request"]:
        assert KNOWN_EVENTS[event], event
    assert "typed" in KNOWN_EVENTS["issues"]


@pytest.mark.parametrize(
    ("event", "action", "schema"), HOOKS, ids=[f"{e}.{a}" if a else e for e, a, _ in HOOKS]
)
def test_a_payload_fitting_each_schema_decodes_into_its_own_struct(
    event: str, action: str | None, schema: Schema
) -> None:
    payload = example(schema)
    if action is not None:
        payload["action"] = action
    body = json.dumps(payload).encode()

    parsed = parse(event, body)

    if action is None:
        assert type(parsed.payload) is PAYLOAD_TYPES[event]
        assert parsed.qualified_name == event or event in OPEN_ACTION_EVENTS
    else:
        assert type(parsed.payload) is ACTION_TYPES[f"{event}.{action}"]
        assert parsed.qualified_name == f"{event}.{action}"


@pytest.mark.parametrize(
    "name", sorted({e for e, _, _ in HOOKS} | {f"{e}.{a}" for e, a, _ in HOOKS if a})
)
def test_on_accepts_every_event_and_action(name: str) -> None:
    class Bot(InstallationActor):
        @on(name)
        async def handle(self, event: Any) -> None:
            pass

    assert Bot.handlers_for(name, name.partition(".")[0]) == ("handle",)
