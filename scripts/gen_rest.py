#!/usr/bin/env python3
"""Generate `ghbot/rest/` (models, one module per namespace) from GitHub's REST description.

The source is `generated/api.github.com.json` of the npm package `@octokit/openapi`
(MIT; "GitHub's official OpenAPI spec with Octokit extensions"). It is not committed
(13 MB): its version and sha256 are written in the header of every generated file.
Regenerate with:

    cd /tmp && npm pack @octokit/openapi && tar xzf octokit-openapi-*.tgz
    .venv/bin/python scripts/gen_rest.py /tmp/package/generated/api.github.com.json

Rules, chosen so that real answers decode and keep decoding as GitHub adds fields:

- namespaces and method names follow octokit: the `operationId` `issues/create-comment`
  is `rest.issues.create_comment`; one module per namespace under
  `ghbot/rest/namespaces/`, imported on first use;
- path and query parameters and the properties of a JSON body are keyword-only
  arguments typed from their schemas (a string enum is a `Literal`); a body that is not
  an object with properties is one `data` argument. A query parameter left at None and
  a body property left `UNSET` are not sent (pass None to a body property to send null);
- the return type is the 2xx answer's schema: a component schema is a `Struct` in
  `ghbot/rest/models.py` (`issue-comment` is `IssueComment`), an inline object a
  `Struct` in the namespace module; 204 is None; a non-JSON answer is `str`; a `oneOf`
  or `anyOf` of several objects is one `Struct` of all their properties (required
  where all require it; `Any` where their types differ), since msgspec cannot tell
  untagged objects apart; objects beside arrays, or 2xx answers of different schemas,
  are `Any` (the decoded JSON);
- a response field the description marks required and not nullable is typed `T`; any
  other field is `T | None = None`. A required field still defaults to `MISSING` (None
  at run time): GitHub Enterprise Server and older answers lack fields the description
  added since (the recorded `full-repository` has no `has_discussions`), and an answer
  to a write GitHub performed must not fail to decode for a missing field. Reading such
  a field gives None where the type says `T`: the one place the types may be wrong.
  A field an answer sends as null though the description forbids it goes in
  `LENIENT` (it gets `T | None`). Unknown fields are ignored; string enums are `str` (GitHub adds
  values), `date-time` strings stay `str`, `number` is `float` (accepts integers);
- `nullable-X` components equal to `X` but for `nullable` are `X | None`;
- a GET with a `per_page` parameter pages: its items are the array answer's items, or
  the one array property of an object answer (`check_runs`), decided here from the
  schema. `Op.key` names that property; the answer's `Struct` gets `page_items()`;
- an answer with no JSON media type is asked for with its own `Accept` (`text/html`),
  and an operation with a required preview (`x-github.previews`) with the preview's.

The output is deterministic and passed through `ruff format`;
`tests/unit/test_rest_generated.py` regenerates from a committed subset of the
description (`--subset` writes it) and compares each class and method, by AST, with the
committed modules.

Usage: `python scripts/gen_rest.py SOURCE [--output DIR] [--subset OUT OPERATION_ID...]`

The committed subset was cut with:

    .venv/bin/python scripts/gen_rest.py /tmp/package/generated/api.github.com.json \
        --subset tests/fixtures/openapi-rest-subset.json issues/create-comment \
        issues/list-for-repo issues/add-labels issues/update checks/list-for-ref \
        checks/create repos/create-commit-status markdown/render-raw \
        activity/mark-notifications-as-read users/get-by-username \
        search/issues-and-pull-requests repos/upload-release-asset
"""

from __future__ import annotations

import argparse
import hashlib
import json
import keyword
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "ghbot" / "rest"
SOURCE_NAME = "@octokit/openapi"
METHODS = ("get", "post", "put", "patch", "delete", "head")
#: (component, field) pairs real answers send as null though the description forbids it.
#: Empty for 23.0.2: no answer recorded in tests/fixtures/api, nor the fake's, does so.
LENIENT: frozenset[tuple[str, str]] = frozenset()
#: Names a field may not have in a class body that annotates with them.
RESERVED = {
    "MISSING", "int", "str", "float", "bool", "list", "dict", "Any", "None", "field",
    "Struct", "Model", "Op", "Namespace", "UNSET", "UnsetType", "Literal", "Mapping",
    "Sequence",
}  # fmt: skip
SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}


def camel(name: str) -> str:
    """`issue-comment` → `IssueComment`."""
    parts = re.split(r"[^0-9A-Za-z]+", name)
    text = "".join(p[:1].upper() + p[1:] for p in parts if p)
    return text if text[:1].isalpha() else f"N{text}"


def snake(name: str) -> str:
    """A wire name as a Python identifier: `-`, `[]` and the like become `_`."""
    text = re.sub(r"\W+", "_", name).strip("_") or "value"
    if text[0].isdigit():
        text = f"n{text}"
    if keyword.iskeyword(text) or text in RESERVED:
        text += "_"
    return text


class Spec:
    """The description and its `$ref` lookups."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.schemas: dict[str, Any] = doc["components"]["schemas"]

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            *_, kind, name = node["$ref"].split("/")
            node = self.doc["components"][kind][name]
        return node

    def operations(self) -> list[tuple[str, str, dict[str, Any]]]:
        found = []
        for path, item in self.doc["paths"].items():
            for method in METHODS:
                if method in item:
                    found.append((path, method, item[method]))
        return sorted(found, key=lambda o: o[2]["operationId"])


def ref_name(node: Any) -> str | None:
    if isinstance(node, dict) and "$ref" in node and "/schemas/" in node["$ref"]:
        return str(node["$ref"].rsplit("/", 1)[1])
    return None


def nullable(schema: dict[str, Any]) -> bool:
    return bool(schema.get("nullable")) or schema.get("type") == "null"


def is_object(schema: dict[str, Any]) -> bool:
    return bool(schema.get("properties")) and not schema.get("oneOf")


class Models:
    """Struct definitions, emitted into one module (components) or another (inline)."""

    def __init__(self, spec: Spec, shared: Models | None = None) -> None:
        self.spec = spec
        #: Where component schemas go (`models.py`); self for that module itself.
        self.shared = shared or self
        self.classes: dict[str, str] = {}  # class name -> source
        self.component_class: dict[str, str] = {}  # schema name -> class name
        self.declared: dict[int, str] = {}  # id of an inline schema -> class name
        self.kept: list[Any] = []
        self.aliases = shared.aliases if shared else self._nullable_aliases()

    def _nullable_aliases(self) -> dict[str, str]:
        """`nullable-simple-user` → `simple-user` when they differ only in `nullable`."""
        drop = ("nullable", "title", "description")
        found = {}
        for name, schema in self.spec.schemas.items():
            base = name.removeprefix("nullable-")
            if base != name and base in self.spec.schemas:
                strip = {k: v for k, v in schema.items() if k not in drop}
                other = {k: v for k, v in self.spec.schemas[base].items() if k not in drop}
                if strip == other:
                    found[name] = base
        return found

    # --- response types -----------------------------------------------------------------

    def type_of(self, node: Any, hint: str, sink: Models | None = None) -> str:
        """The Python type of a response schema; structs are made as needed."""
        name = ref_name(node)
        schema = self.spec.resolve(node)
        optional = nullable(schema)
        if name is not None:
            name = self.aliases.get(name, name)
            text = self.shared._component(name)
        else:
            text = self._inline(schema, hint, sink or self)
        return f"{text} | None" if optional and text != "Any" else text

    def _component(self, name: str) -> str:
        schema = self.spec.schemas[name]
        if not is_object(schema) and not (schema.get("allOf") and self._merged(schema)):
            return self._inline(schema, camel(name), self)
        if name not in self.component_class:
            cls = self._unique(camel(name))
            self.component_class[name] = cls
            self.classes[cls] = ""  # reserve before recursing
            self.classes[cls] = self._struct(cls, self._merged(schema), name)
        return self.component_class[name]

    def _inline(self, schema: dict[str, Any], hint: str, sink: Models) -> str:
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return self._union(schema[key], hint, sink)
        if "allOf" in schema:
            parts = schema["allOf"]
            if len(parts) == 1:
                return sink.type_of(parts[0], hint, sink)
            merged = self._merged(schema)
            return sink._declare(hint, merged, None) if merged.get("properties") else "Any"
        kind = schema.get("type")
        if kind == "array":
            return f"list[{sink.type_of(schema.get('items', {}), hint + 'Item', sink)}]"
        if kind in SCALARS:
            return SCALARS[kind]
        if schema.get("properties"):
            return sink._declare(hint, schema, None)
        if kind == "object" or "additionalProperties" in schema:
            return "dict[str, Any]"
        return "Any"

    def _union(self, variants: list[Any], hint: str, sink: Models) -> str:
        real = [v for v in variants if self.spec.resolve(v).get("type") != "null"]
        none = " | None" if len(real) < len(variants) else ""
        if len(real) == 1:
            found = sink.type_of(real[0], hint, sink)
            return found if found == "Any" or found.endswith(" | None") else found + none
        kinds = [self.spec.resolve(v).get("type") for v in real]
        if real and all(
            ref_name(v) is None and k in SCALARS for v, k in zip(real, kinds, strict=True)
        ):
            return " | ".join(dict.fromkeys(SCALARS[k] for k in kinds)) + none
        objects = [self._merged(self.spec.resolve(v)) for v in real]
        if not real or not all(o.get("properties") for o in objects):
            return "Any"  # objects beside arrays or scalars: the decoded JSON
        names = [ref_name(v) for v in real]
        if all(names):  # components: one shared struct, named after two of them
            sink = self.shared
            if len(names) == 2:
                hint = "Or".join(camel(self.aliases.get(n, n)) for n in names if n)
                if hint in sink.classes:
                    return hint + none
        # msgspec cannot tell untagged objects apart: one struct with all their fields
        return sink._declare(hint, self._united(objects), None, key=variants) + none

    def _united(self, objects: list[dict[str, Any]]) -> dict[str, Any]:
        """Objects as one: every property (Any where their types differ), required by all."""
        props: dict[str, Any] = {}
        for obj in objects:
            for name, prop in obj["properties"].items():
                kind = self.spec.resolve(prop).get("type")
                if name in props and self.spec.resolve(props[name]).get("type") != kind:
                    props[name] = {}
                props.setdefault(name, prop)
        required = set.intersection(*(set(o.get("required", [])) for o in objects))
        return {"type": "object", "properties": props, "required": sorted(required)}

    def _merged(self, schema: dict[str, Any]) -> dict[str, Any]:
        """An `allOf` of objects as one object schema (properties and `required` united)."""
        if "allOf" not in schema:
            return schema
        props: dict[str, Any] = {}
        required: list[str] = []
        for part in schema["allOf"]:
            part = self._merged(self.spec.resolve(part))
            props.update(part.get("properties", {}))
            required += part.get("required", [])
        return {"type": "object", "properties": props, "required": required}

    def _declare(
        self, hint: str, schema: dict[str, Any], component: str | None, key: Any = None
    ) -> str:
        """Make a struct for `schema` once (by the identity of `key`, else of `schema`)."""
        key = schema if key is None else key
        if id(key) in self.declared:
            return self.declared[id(key)]
        self.kept.append(key)  # alive, so that its id is never reused
        cls = self.declared[id(key)] = self._unique(hint)
        self.classes[cls] = ""
        self.classes[cls] = self._struct(cls, schema, component)
        return cls

    def _unique(self, name: str) -> str:
        cls, n = name, 2
        while cls in self.classes or cls in self.shared.classes or cls in RESERVED:
            cls, n = f"{name}{n}", n + 1
        return cls

    def _struct(self, cls: str, schema: dict[str, Any], component: str | None) -> str:
        required = set(schema.get("required", []))
        lines = [f"class {cls}(Model):"]
        title = (schema.get("title") or "").strip().splitlines()
        doc = title[0] if title else (f"The `{component}` schema." if component else "")
        lines.append(f'    """{_docline(doc or cls)}"""')
        fields = []
        names: set[str] = set()
        for wire, prop in schema["properties"].items():
            attr = snake(wire)
            while attr in names:
                attr += "_"
            names.add(attr)
            kind = self.type_of(prop, cls + camel(wire))
            needed = (
                wire in required
                and not kind.endswith(" | None")
                and kind != "Any"
                and (component, wire) not in LENIENT
            )
            rename = f"name={wire!r}" if attr != wire else ""
            if needed:
                default = f"field(default=MISSING, {rename})" if rename else "MISSING"
                fields.append((0, f"    {attr}: {kind} = {default}"))
            else:
                kind = kind if kind == "Any" or kind.endswith(" | None") else f"{kind} | None"
                default = f"field(default=None, {rename})" if rename else "None"
                fields.append((1, f"    {attr}: {kind} = {default}"))
        lines += [text for _, text in sorted(fields, key=lambda f: f[0])] or ["    pass"]
        return "\n".join(lines)


def _docline(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', "'''").strip().rstrip('"')[:200]


# --- operations ------------------------------------------------------------------------


class Operation:
    """One operation as the generator writes it: signature, `Op(...)` and return type."""

    def __init__(self, spec: Spec, models: Models, local: Models, path: str, verb: str,
                 op: dict[str, Any]) -> None:  # fmt: skip
        self.spec, self.models, self.local = spec, models, local
        self.path, self.verb, self.op = path, verb.upper(), op
        servers = [s["url"] for s in op.get("servers", [])]
        if servers and servers[0] not in [s["url"] for s in spec.doc.get("servers", [])]:
            self.path = servers[0] + path  # uploads.github.com: sent there, verbatim
        scope, _, name = op["operationId"].partition("/")
        self.namespace, self.name = snake(scope), snake(name)
        self.hint = camel(scope) + camel(name)
        self.args: list[tuple[int, str]] = []  # (order, source)
        self.wire: dict[str, str] = {}  # python name -> wire name, when different
        self.path_args: list[str] = []
        self.query_args: list[str] = []
        self.body_args: list[str] = []
        self.whole_body = False
        self.content_type: str | None = None
        self.accept: str | None = None
        self.key: str | None = None
        self.items: str | None = None  # the item type of a paged operation
        self.pages = False
        self._parameters()
        self._body()
        self.returns = self._returns()
        previews = [p for p in op.get("x-github", {}).get("previews", []) if p.get("required")]
        if previews:  # none in the 2022-11-28 description; older ones had many
            self.accept = f"application/vnd.github.{previews[0]['name']}-preview+json"

    def _add(self, wire: str, kind: str, required: bool, default: str, taken: set[str]) -> str:
        name = snake(wire)
        while name in taken:
            name += "_"
        taken.add(name)
        if name != wire:
            self.wire[name] = wire
        if required:
            self.args.append((0, f"{name}: {kind}"))
        else:
            self.args.append((1, f"{name}: {kind} | {default} = {default}".replace(
                "None | None", "None").replace(" | UNSET =", " | UnsetType =")))  # fmt: skip
        return name

    def _parameters(self) -> None:
        self.taken: set[str] = {"self"}
        for raw in self.op.get("parameters", []):
            param = self.spec.resolve(raw)
            where = param["in"]
            if where not in ("path", "query"):
                continue
            kind = param_type(self.spec, param.get("schema", {}))
            required = where == "path" or bool(param.get("required"))
            name = self._add(param["name"], kind, required, "None", self.taken)
            (self.path_args if where == "path" else self.query_args).append(name)
            if param["name"] == "per_page" and self.verb == "GET":
                self.pages = True

    def _body(self) -> None:
        body = self.spec.resolve(self.op.get("requestBody"))
        if not body:
            return
        content = body.get("content", {})
        if "application/json" not in content:
            self.content_type = next(iter(content))
            if self.content_type.startswith("text/"):
                self.content_type += "; charset=utf-8"  # a str argument is sent as UTF-8
            kind = "bytes" if "octet" in self.content_type else "str"
            self._whole(kind, bool(body.get("required")))
            return
        schema = self.spec.resolve(content["application/json"].get("schema", {}))
        for variant in schema.get("oneOf", []):
            if self.spec.resolve(variant).get("properties"):
                schema = self.spec.resolve(variant)
                break
        schema = self.models._merged(schema)
        if not schema.get("properties"):
            self._whole(param_type(self.spec, schema), bool(body.get("required")))
            return
        required = set(schema.get("required", [])) if body.get("required") else set()
        for wire, prop in schema["properties"].items():
            kind = param_type(self.spec, prop)
            name = self._add(wire, kind, wire in required, "UNSET", self.taken)
            self.body_args.append(name)

    def _whole(self, kind: str, required: bool) -> None:
        self.whole_body = True
        self.body_args.append(self._add("data", kind, required, "UNSET", self.taken))

    def _answers(self) -> list[tuple[str, dict[str, Any] | None]]:
        found = []
        for status, raw in sorted(self.op.get("responses", {}).items()):
            if status.startswith("2"):
                found.append((status, self.spec.resolve(raw)))
        return found

    def _returns(self) -> str:
        kinds: list[str] = []
        for _status, answer in self._answers():
            content = (answer or {}).get("content") or {}
            if not content:
                kinds.append("None")
            elif "application/json" in content:
                kinds.append(self._json_type(content["application/json"].get("schema", {})))
            else:
                self.accept = next(iter(content))
                kinds.append("str")
        unique = list(dict.fromkeys(kinds)) or ["None"]
        if len(unique) == 1:
            if self.pages and self.items is None and unique[0].startswith("list["):
                self.items = unique[0].removeprefix("list[").removesuffix("]")
            return unique[0]
        if len(unique) == 2 and "None" in unique:
            other = next(k for k in unique if k != "None")
            if self.pages and self.items is None and other.startswith("list["):
                self.items = other.removeprefix("list[").removesuffix("]")  # 204: no items
            return other if other == "Any" or other.endswith(" | None") else f"{other} | None"
        self.items = self.key = None
        return "Any"

    def _json_type(self, schema: Any) -> str:
        resolved = self.spec.resolve(schema)
        if self.pages and resolved.get("type") == "object":
            arrays = [
                k for k, v in resolved.get("properties", {}).items()
                if self.spec.resolve(v).get("type") == "array"
            ]  # fmt: skip
            if len(arrays) > 1:  # search: `items` beside `lexical_fallback_reason` (strings)
                arrays = [k for k in arrays if self._of_objects(resolved["properties"][k])]
            if len(arrays) == 1:
                self.key = arrays[0]
                return self._page(schema, resolved)
        if self.pages and resolved.get("type") != "array":
            self.pages = False
        return self.models.type_of(schema, self.hint, self.local)

    def _of_objects(self, array: Any) -> bool:
        items = self.spec.resolve(self.spec.resolve(array).get("items", {}))
        return bool(self.models._merged(items).get("properties"))

    def _page(self, schema: Any, resolved: dict[str, Any]) -> str:
        """A paged answer wrapping its items: a local Struct with `page_items()`."""
        assert self.key is not None
        attr = snake(self.key)
        if ref_name(schema) is not None:
            base = self.models.type_of(schema, self.hint)
            fields = self.models.classes[base]
            cls = self.local._unique(f"{self.hint}Page")
            body = [f"class {cls}({base}):", f'    """A page of `{self.op["operationId"]}`."""']
            self.local.classes[cls] = "\n".join(body)
        else:
            cls = self.local._declare(f"{self.hint}Response", resolved, None)
            fields = self.local.classes[cls]
        found = re.search(rf"^    {attr}: (list\[.*?\])( \| None)?( = .*)?$", fields, re.M)
        if found is None:
            raise ValueError(f"{self.op['operationId']}: no list {attr} in {cls}")
        item = found.group(1)
        self.items = item.removeprefix("list[").removesuffix("]")
        self.local.classes[cls] += (
            f"\n\n    def page_items(self) -> {item}:\n"
            f'        """The items of this page (`{self.key}`)."""\n'
            f"        return self.{attr} or []"
        )
        return cls

    def source(self) -> tuple[str, str]:
        """Return the `Op(...)` constant and the method."""
        const = f"_{self.name.upper()}"
        spec = [repr(self.verb), repr(self.path)]
        for label, names in (("in_path", self.path_args), ("in_query", self.query_args),
                             ("in_body", self.body_args)):  # fmt: skip
            if names:
                spec.append(f"{label}={tuple(names)!r}")
        if self.wire:
            spec.append(f"wire={self.wire!r}")
        if self.whole_body:
            spec.append("whole_body=True")
        for label, value in (("content_type", self.content_type), ("accept", self.accept),
                             ("key", self.key)):  # fmt: skip
            if value:
                spec.append(f"{label}={value!r}")
        if self.items:
            spec.append(f"items={self.items}")
        spec.append(f"returns={self.returns}")
        op_line = f"{const} = Op({', '.join(spec)})"
        args = [text for _, text in sorted(self.args, key=lambda a: a[0])]
        signature = ", ".join(["self", "*", *args]) if args else "self"
        summary = _docline(self.op.get("summary") or self.op["operationId"])
        url = (self.op.get("externalDocs") or {}).get("url", "")
        doc = (
            f'        """{summary}.\n\n        {self.verb} {self.path}\n        {url}\n        """'
        )
        if self.op.get("deprecated"):
            doc = doc.replace(".\n\n", ". Deprecated by GitHub.\n\n", 1)
        method = (
            f"    async def {self.name}({signature}) -> {self.returns}:\n{doc}\n"
            f"        return await self._send({const}, locals())"
        )
        return op_line, method


def param_type(spec: Spec, node: Any) -> str:
    """The Python type of a parameter or body property: plain values, mappings for objects."""
    schema = spec.resolve(node)
    optional = " | None" if nullable(schema) else ""
    for key in ("oneOf", "anyOf"):
        if key in schema:
            kinds = {param_type(spec, v) for v in schema[key]}
            return kinds.pop() if len(kinds) == 1 else "Any"
    kind = schema.get("type")
    if kind == "string" and schema.get("enum") and all(isinstance(e, str) for e in schema["enum"]):
        return f"Literal[{', '.join(repr(e) for e in schema['enum'])}]{optional}"
    if kind in SCALARS:
        return SCALARS[kind] + optional
    if kind == "array":
        return f"Sequence[{param_type(spec, schema.get('items', {}))}]{optional}"
    if kind == "object" or schema.get("properties") or "allOf" in schema:
        return f"Mapping[str, Any]{optional}"
    return "Any"


# --- modules --------------------------------------------------------------------------


def header(source: str, digest: str, version: str) -> str:
    return (
        f"Generated by scripts/gen_rest.py from {SOURCE_NAME} {version}\n"
        "(generated/api.github.com.json). Do not edit.\n"
        f"Source sha256: {digest}\n"
    )


MODELS_HEAD = '''"""Response models of GitHub's REST API, one `Struct` per component schema.

{header}"""
# ruff: noqa
# mypy: disable-error-code="no-any-return"

from __future__ import annotations

from typing import Any

from msgspec import field

from ghbot.rest.operation import MISSING, Model

'''

NAMESPACE_HEAD = '''"""`rest.{namespace}`: {count} operations of GitHub's REST API.

{header}"""
# ruff: noqa
# mypy: disable-error-code="no-any-return"

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from msgspec import UNSET, UnsetType, field

from ghbot.rest.operation import MISSING, Model, Namespace, Op
{imports}
'''

ROOT_HEAD = '''"""`GitHub.rest`: one property per namespace, each module imported on first use.

{header}"""
# ruff: noqa
# mypy: disable-error-code="no-any-return"

from __future__ import annotations

from typing import TYPE_CHECKING

from ghbot.rest.operation import RestBase

if TYPE_CHECKING:
{imports}

#: The namespaces (octokit's names), each `ghbot.rest.namespaces.<name>`.
NAMESPACES = {names!r}


class Rest(RestBase):
    """GitHub's REST API, typed; `paginate` pages a list operation's items."""

    __slots__ = ()
'''


def generate(doc: dict[str, Any], digest: str) -> dict[str, str]:
    """Return `{relative path: source}` for every generated module (not yet formatted)."""
    spec = Spec(doc)
    version = doc["info"].get("version", "?")
    head = header("", digest, version)
    models = Models(spec)
    grouped: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, verb, op in spec.operations():
        grouped.setdefault(snake(op["operationId"].split("/")[0]), []).append((path, verb, op))
    files: dict[str, str] = {}
    for namespace, ops in sorted(grouped.items()):
        local = Models(spec, models)
        built = [Operation(spec, models, local, p, v, o) for p, v, o in ops]
        own = local.classes
        files[f"namespaces/{namespace}.py"] = namespace_module(namespace, built, own, models, head)
    body = "\n\n\n".join(models.classes[k] for k in sorted(models.classes))
    files["models.py"] = MODELS_HEAD.format(header=head) + "\n" + body + "\n"
    files["root.py"] = root_module(sorted(grouped), head)
    files["namespaces/__init__.py"] = (
        f'"""One module per namespace of `GitHub.rest`.\n\n{head}"""\n'
    )
    return files


def namespace_module(
    namespace: str, built: list[Operation], own: dict[str, str], models: Models, head: str
) -> str:
    cls = camel(namespace) + "Api"
    consts, methods = [], []
    for operation in built:
        const, method = operation.source()
        consts.append(const)
        methods.append(method)
    text = "\n\n\n".join(own[k] for k in sorted(own))
    text += "\n\n\n" + "\n".join(consts)
    text += (
        f'\n\n\nclass {cls}(Namespace):\n    """`rest.{namespace}`."""\n\n    __slots__ = ()\n\n'
    )
    text += "\n\n".join(methods) + "\n"
    used = sorted(
        name for name in models.classes
        if name not in own and re.search(rf"\b{re.escape(name)}\b", text)
    )  # fmt: skip
    imports = f"from ghbot.rest.models import {', '.join(used)}\n" if used else ""
    head_text = NAMESPACE_HEAD.format(
        namespace=namespace, count=len(built), header=head, imports=imports
    )
    return head_text + "\n\n" + text


def root_module(names: list[str], head: str) -> str:
    imports = "\n".join(f"    from ghbot.rest.namespaces.{n} import {camel(n)}Api" for n in names)
    text = ROOT_HEAD.format(header=head, imports=imports, names=tuple(names))
    for name in names:
        text += (
            f"\n    @property\n    def {name}(self) -> {camel(name)}Api:\n"
            f'        """`{name}` operations."""\n'
            f"        return self._namespace({name!r}, {camel(name) + 'Api'!r})\n"
        )
    return text


def subset(doc: dict[str, Any], operation_ids: set[str]) -> dict[str, Any]:
    """Keep only `operation_ids` and the components they reach."""
    paths: dict[str, Any] = {}
    for path, item in doc["paths"].items():
        kept = {m: o for m, o in item.items() if m in METHODS and o["operationId"] in operation_ids}
        if kept:
            paths[path] = kept
    components: dict[str, dict[str, Any]] = {}
    todo = [paths]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if "$ref" in node:
                *_, kind, name = node["$ref"].split("/")
                if name not in components.setdefault(kind, {}):
                    target = doc["components"][kind][name]
                    components[kind][name] = target
                    todo.append(target)
                    base = name.removeprefix("nullable-")  # for `Models.aliases`
                    if base != name and base in doc["components"][kind]:
                        todo.append({"$ref": f"#/components/{kind}/{base}"})
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return {
        "openapi": doc["openapi"],
        "info": doc["info"],
        "paths": paths,
        "components": components,
    }


def write(files: dict[str, str], output: Path) -> None:
    for relative, text in files.items():
        target = output / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    paths = [str(output / r) for r in files]
    ruff = [sys.executable, "-m", "ruff"]
    subprocess.run([*ruff, "format", "--quiet", *paths], check=True)  # noqa: S603


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--digest", help="the sha256 to record (default: the source's)")
    parser.add_argument("--subset", nargs="+", metavar=("OUT", "OPERATION_ID"))
    args = parser.parse_args(argv)
    raw = args.source.read_bytes()
    doc = json.loads(raw)
    if args.subset:
        out, *ids = args.subset
        Path(out).write_text(json.dumps(subset(doc, set(ids)), indent=1) + "\n")
        return 0
    digest = args.digest or hashlib.sha256(raw).hexdigest()
    write(generate(doc, digest), args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
