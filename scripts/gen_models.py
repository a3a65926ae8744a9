#!/usr/bin/env python3
"""Generate `ghbot/models/_generated.py` from GitHub's webhook JSON Schema.

The schema is `@octokit/webhooks-schemas` (MIT), kept at
`tests/fixtures/webhook-schema.json`. It defines each event as `<event>$<action>`
variants (or one `<event>$event`) over shared definitions such as `repository`.

Rules, chosen so that real payloads decode and keep decoding as GitHub adds fields:

- one `Struct` per shared definition, reused wherever it is referenced;
- one `<Event>Payload` per event: the properties of all its actions, merged;
- an inline object becomes a `Struct` named by its path (`PullRequestHead`);
- every field is `T | None = None`, except the few in `REQUIRED`;
- string enums are `str` (GitHub adds values), `date-time` strings stay `str`;
- `allOf` takes the referenced definition (the rest only narrows it); a `oneOf` of
  several objects merges their properties into one `Struct`.

The output is deterministic and already in `ruff format` style, so
`tests/unit/test_events.py` can compare it byte for byte with the committed file.

Usage: `python scripts/gen_models.py [SCHEMA] [--output PATH] [--check]`
"""

from __future__ import annotations

import argparse
import hashlib
import json
import keyword
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCHEMA = ROOT / "tests" / "fixtures" / "webhook-schema.json"
DEFAULT_OUTPUT = ROOT / "ghbot" / "models" / "_generated.py"
DOCS = "https://docs.github.com/en/webhooks/webhook-events-and-payloads"

Schema = dict[str, Any]
Alt = tuple[str, Any]  # (kind, detail): kinds are def, obj, dict, arr, prim, null, any

# Fields GitHub always sends (checked against every fixture); the rest are optional.
REQUIRED: dict[str, tuple[str, ...]] = {
    "user": ("login", "id"),
    "repository": ("id", "name", "full_name", "owner"),
    "installation": ("id",),
    "installation-lite": ("id",),
    "issue": ("number",),
    "pull-request": ("number",),
}
# One type for these top-level fields in every payload, so that `Event.sender` and
# `Event.repository` are typed once. The schema's `github-org` sender and the inline
# sender of `marketplace_purchase` are both user-shaped.
ENVELOPE_REFS = {"sender": "user", "repository": "repository"}
# The payload of an event the schema does not know: the fields all events share.
UNKNOWN = {"installation": "installation-lite", "organization": "organization", **ENVELOPE_REFS}
UNKNOWN_DOC = """Payload of an event the schema does not know: the fields all events share.

The rest of the body is in `Event.raw`."""
# Field names that would shadow a name used in annotations, or `self` in `__init__`.
RESERVED = {"Any", "bool", "dict", "float", "int", "list", "msgspec", "str", "self"}
SPECIAL = {"+1": "plus_one", "-1": "minus_one"}
PRIMS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
PRIM_ORDER = ("str", "int", "float", "bool")
LINE = 100
MAX_NAME = 56


def camel(name: str) -> str:
    """Return `name` (`pull-request`, `projects_v2_item`) as `PullRequest`."""
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^0-9A-Za-z]+", name) if p)


def py_name(name: str) -> str:
    """Return a Python attribute name for the JSON key `name`."""
    out = SPECIAL.get(name) or re.sub(r"\W", "_", name).strip("_") or "field"
    if out[0].isdigit():
        out = "n" + out
    if keyword.iskeyword(out) or out in RESERVED:
        out += "_"
    return out


class Site(NamedTuple):
    """Where a type is being decided: the class name to use for an inline object there."""

    stem: str  # class name for an inline object here
    origin: str  # `Class.field`, for docstrings
    root: str  # stem of the nearest definition or payload, for a shorter name

    def item(self) -> Site:
        return Site(self.stem + "Item", self.origin + "[]", self.root)


@dataclass
class StructSpec:
    """A `Struct` to emit: the object schemas whose properties it merges."""

    name: str
    doc: str
    sources: list[Schema]
    required: tuple[str, ...] = ()
    overrides: dict[str, list[Schema]] | None = None
    stem: str = ""  # prefix of nested class names, when not `name` (payloads)
    root: str = ""  # the stem of the nearest definition or payload


class Generator:
    """Turn the schema into `StructSpec`s and render them as one module."""

    def __init__(self, schema: Schema) -> None:
        self.defs: dict[str, Schema] = schema["definitions"]
        self.root_refs = [ref_name(r) for r in schema["oneOf"]]
        self.specs: dict[str, StructSpec] = {}
        self.by_def: dict[str, str] = {}
        self.fields: dict[str, list[str]] = {}
        self.def_names = {camel(d) for d in self.defs if "$" not in d}

    # --- reading the schema -----------------------------------------------------------

    def events(self) -> dict[str, list[str]]:
        """Return each event name and the definitions of its variants, in schema order."""
        out: dict[str, list[str]] = {}
        for ref in self.root_refs:
            variants = [ref_name(v) for v in self.defs[ref].get("oneOf", [])] or [ref]
            out[variants[0].split("$")[0]] = variants
        return dict(sorted(out.items()))

    def actions(self, variants: list[str]) -> tuple[list[str], bool]:
        """Return the known actions of an event, and whether any action string is valid."""
        found: set[str] = set()
        free = False
        for source in (s for v in variants for s in self.object_sources(self.defs[v])):
            action = source["properties"].get("action")
            if action is not None and "enum" in action:
                found.update(action["enum"])
            elif action is not None:
                free = True
        return sorted(found), free

    def object_sources(self, schema: Schema) -> list[Schema]:
        """Return the object schemas (with properties) that `schema` can be."""
        if "$ref" in schema:
            return self.object_sources(self.defs[ref_name(schema)])
        if "allOf" in schema:
            refs = [p for p in schema["allOf"] if "$ref" in p] or schema["allOf"]
            return [s for p in refs for s in self.object_sources(p)]
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return [s for p in schema[key] for s in self.object_sources(p)]
        return [schema] if "properties" in schema else []

    def alts(self, schema: Schema) -> list[Alt]:
        """Return the alternatives a value of `schema` can take."""
        if "$ref" in schema:
            name = ref_name(schema)
            inner = self.alts(self.defs[name])
            if {k for k, _ in inner} <= {"def", "obj", "null"} and self.object_sources(schema):
                return [("def", name)]
            return inner
        if "allOf" in schema:
            refs = [p for p in schema["allOf"] if "$ref" in p] or schema["allOf"]
            return [a for p in refs for a in self.alts(p)]
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return [a for p in schema[key] for a in self.alts(p)]
        types = schema.get("type")
        if types is None:
            values = schema.get("enum", [schema["const"]] if "const" in schema else [])
            types = sorted({json_type(v) for v in values}) or ["any"]
        return [self.alt_of_type(t, schema) for t in ([types] if isinstance(types, str) else types)]

    @staticmethod
    def alt_of_type(t: str, schema: Schema) -> Alt:
        if t == "object":
            return ("obj", schema) if schema.get("properties") else ("dict", None)
        if t == "array":
            return ("arr", schema.get("items", {}))
        if t in PRIMS:
            return ("prim", PRIMS[t])
        return ("null", None) if t == "null" else ("any", None)

    # --- deciding types ---------------------------------------------------------------

    def annotation(self, schemas: list[Schema], site: Site) -> str:
        """Return the annotation (without `| None`) for a field that may be any of `schemas`."""
        alts = [a for s in schemas for a in self.alts(s)]
        kinds = {k for k, _ in alts}
        if "any" in kinds:
            return "Any"
        parts: list[str] = []
        defs = list(dict.fromkeys(d for k, d in alts if k == "def"))
        objs = [o for k, o in alts if k == "obj"]
        if defs or objs:
            parts.append(self.object_type(defs, objs, site))
        elif "dict" in kinds:
            parts.append("dict[str, Any]")
        items = [i for k, i in alts if k == "arr"]
        if items:
            parts.append(f"list[{self.annotation(items, site.item())}]")
        prims = {p for k, p in alts if k == "prim"}
        parts += [p for p in PRIM_ORDER if p in prims]
        return " | ".join(parts) or "Any"

    def object_type(self, defs: list[str], objs: list[Schema], site: Site) -> str:
        """Return the class for a value that may be any of these objects."""
        if len(defs) == 1 and not objs:
            return self.struct_for_def(defs[0])
        if not objs:  # `user | team`: one merged struct per combination, named for it
            name = "Or".join(camel(d) for d in defs)
            if name not in self.specs:
                doc = f"Any of the definitions {', '.join(defs)} (fields merged)."
                sources = [s for d in defs for s in self.object_sources(self.defs[d])]
                self.add(StructSpec(name, doc, sources), is_def=True)
            return name
        if not defs and all(set(o["properties"]) <= {"from", "to"} for o in objs):
            values = [v for o in objs for v in o["properties"].values()]
            return f"Change[{self.annotation(values, site)}]"
        sources = [s for d in defs for s in self.object_sources(self.defs[d])] + objs
        doc = f"Inline object `{site.origin}`."
        return self.add(StructSpec(site.stem, doc, sources, root=site.root))

    def struct_for_def(self, name: str) -> str:
        """Return the class for definition `name`, registering it on first use."""
        if name not in self.by_def:
            spec = StructSpec(
                camel(name),
                f"Schema definition `{name}`.",
                self.object_sources(self.defs[name]),
                REQUIRED.get(name, ()),
            )
            self.by_def[name] = self.add(spec, is_def=True)
        return self.by_def[name]

    def child_stem(self, spec: StructSpec, part: str) -> str:
        """Return a free class name for field `part` of `spec`, short if possible."""
        stem = spec.stem or spec.name
        root = spec.root or stem
        names = [join_words(stem, part), stem + part, join_words(root, part)]
        free = [n for n in names if n != spec.name and n not in self.def_names | self.specs.keys()]
        short = [n for n in free if len(n) <= MAX_NAME]
        return (short or free or names)[0]

    def add(self, spec: StructSpec, is_def: bool = False) -> str:
        """Register `spec` under a unique class name and return that name."""
        base, n = spec.name, 2
        while spec.name in self.specs or (not is_def and spec.name in self.def_names):
            spec.name, n = f"{base}{n}", n + 1
        self.specs[spec.name] = spec
        return spec.name

    def payload(self, event: str, variants: list[str]) -> str:
        """Register the payload struct of `event`, merging all its actions."""
        actions, free = self.actions(variants)
        listed = ", ".join(actions) if actions else ("any" if free else "none")
        wrapped = textwrap.wrap(f"Actions: {listed}.", LINE - 8)
        doc = "\n".join([f"Payload of the `{event}` webhook event.", "", *wrapped, "", DOCS])
        doc += f"#{event}"
        overrides = {k: [ref(v)] for k, v in ENVELOPE_REFS.items()}
        sources = [s for v in variants for s in self.object_sources(self.defs[v])]
        spec = StructSpec(camel(event) + "Payload", doc, sources, (), overrides, camel(event))
        return self.add(spec)

    def build_fields(self) -> None:
        """Decide every field of every registered struct (which may register more)."""
        done = 0
        while done < len(self.specs):
            spec = list(self.specs.values())[done]
            self.fields[spec.name] = self.struct_fields(spec)
            done += 1

    def struct_fields(self, spec: StructSpec) -> list[str]:
        """Return the field lines of `spec`: its sources' properties, merged by name."""
        stem = spec.stem or spec.name
        props: dict[str, list[Schema]] = {}
        for src in spec.sources:
            for key, sch in src.get("properties", {}).items():
                props.setdefault(key, []).append(sch)
        lines: list[str] = []
        used: set[str] = set()
        for key, schemas in props.items():
            if spec.overrides and key in spec.overrides:
                schemas = spec.overrides[key]
            attr = py_name(key)
            while attr in used:
                attr += "_"
            used.add(attr)
            site = Site(self.child_stem(spec, camel(key)), f"{spec.name}.{key}", spec.root or stem)
            ann = self.annotation(schemas, site)
            lines.append(field_line(attr, key, ann, key in spec.required))
        return lines

    # --- rendering --------------------------------------------------------------------

    def render(self, digest: str) -> str:
        events = self.events()
        payloads = {e: self.payload(e, v) for e, v in events.items()}
        props = {"action": {"type": "string"}, **{k: ref(v) for k, v in UNKNOWN.items()}}
        self.add(StructSpec("UnknownPayload", UNKNOWN_DOC, [{"properties": props}]))
        self.build_fields()
        names = sorted(self.specs)
        out = [HEADER.format(digest=digest), "__all__ = ["]
        out += [f'    "{n}",' for n in ["KNOWN_EVENTS", "OPEN_ACTION_EVENTS", "PAYLOAD_TYPES"]]
        out += [f'    "{n}",' for n in names] + ["]", ""]
        for name in names:
            out += ["", *self.render_struct(self.specs[name]), ""]
        out += ["", *self.render_tables(events, payloads)]
        return "\n".join(out) + "\n"

    def render_struct(self, spec: StructSpec) -> list[str]:
        doc = spec.doc.split("\n")
        lines = [f"class {spec.name}(Model, kw_only=True):"]
        if len(doc) == 1:
            lines.append(f'    """{doc[0]}"""')
        else:
            lines += [f'    """{doc[0]}'] + [f"    {d}".rstrip() for d in doc[1:]] + ['    """']
        fields = self.fields[spec.name]
        return lines + (["", *fields] if fields else [])

    def render_tables(self, events: dict[str, list[str]], payloads: dict[str, str]) -> list[str]:
        known, free = [], []
        for event, variants in events.items():
            actions, is_free = self.actions(variants)
            free += [event] if is_free else []
            known += frozenset_lines(event, actions)
        out = ["KNOWN_EVENTS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(", "    {"]
        out += [*known, "    }", ")", '"""Each event name GitHub documents, and its actions."""']
        out += ["", "OPEN_ACTION_EVENTS: Final[frozenset[str]] = frozenset("]
        out += ["    {", *[f'        "{e}",' for e in free], "    }", ")"]
        out += ['"""Events whose `action` is free-form (any string is valid)."""']
        out += ["", "PAYLOAD_TYPES: Final[Mapping[str, type[Model]]] = MappingProxyType("]
        out += ["    {", *[f'        "{e}": {p},' for e, p in payloads.items()], "    }", ")"]
        out += ['"""The payload struct of each known event."""']
        return out


HEADER = '''\
# Generated by scripts/gen_models.py from tests/fixtures/webhook-schema.json
# (npm @octokit/webhooks-schemas, MIT), sha256:
# {digest}
# Do not edit: change the generator or the schema, then run
#     python scripts/gen_models.py
# tests/unit/test_events.py fails when this file is not what the generator writes.
"""Typed payloads of every webhook event in GitHub's schema.

https://docs.github.com/en/webhooks/webhook-events-and-payloads
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import msgspec

from ghbot.models._base import Change, Model
'''


def join_words(stem: str, part: str) -> str:
    """Return `stem + part`, said once where they overlap (`RegistryPackage`+`PackageVersion`)."""
    a, b = re.findall(r"[A-Z][^A-Z]*", stem), re.findall(r"[A-Z][^A-Z]*", part)
    for k in range(min(len(a), len(b)), 0, -1):
        if a[-k:] == b[:k]:
            return stem + "".join(b[k:])
    return stem + part


def ref(name: str) -> Schema:
    return {"$ref": f"#/definitions/{name}"}


def ref_name(schema: Schema) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def json_type(value: object) -> str:
    names = {str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), "any")


def field_line(attr: str, key: str, ann: str, required: bool) -> str:
    """Return the lines declaring one field, wrapped as `ruff format` wraps them."""
    if not required and ann != "Any":
        ann += " | None"
    if attr == key:
        value = "" if required else "None"
    else:
        value = ("" if required else "default=None, ") + f'name="{key}"'
        value = f"msgspec.field({value})"
    head = f"    {attr}: {ann}"
    if not value or len(f"{head} = {value}") <= LINE:
        return f"{head} = {value}" if value else head
    if len(head) + len(" = msgspec.field(") > LINE or len(head) + len(" = (") > LINE:
        raise ValueError(f"shorten the class name; cannot fit {head!r} in {LINE} columns")
    if value == "None":  # ruff parenthesizes the value
        return f"{head} = (\n        None\n    )"
    return f"{head} = msgspec.field(\n        {value[14:-1]}\n    )"  # ruff splits the call


def frozenset_lines(event: str, actions: list[str]) -> list[str]:
    """Return `"event": frozenset({...}),` as ruff formats it."""
    if not actions:
        return [f'        "{event}": frozenset(),']
    one = f'        "{event}": frozenset({{{", ".join(json.dumps(a) for a in actions)}}}),'
    if len(one) <= LINE:
        return [one]
    pad = " " * 8
    inner = [f"{pad * 2}{json.dumps(a)}," for a in actions]
    return [f'{pad}"{event}": frozenset(', f"{pad}    {{", *inner, f"{pad}    }}", f"{pad}),"]


def generate(schema_path: Path) -> str:
    """Return the generated module's source for the schema at `schema_path`."""
    raw = schema_path.read_bytes()
    return Generator(json.loads(raw)).render(hashlib.sha256(raw).hexdigest())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("schema", nargs="?", type=Path, default=DEFAULT_SCHEMA)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail if output is stale")
    args = parser.parse_args(argv)
    source = generate(args.schema)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != source:
            print(f"{args.output} is out of date; run scripts/gen_models.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
