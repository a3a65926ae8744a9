"""Schemas of GitHub's REST description as Python types, for `scripts/gen_rest.py`.

`Models` turns response schemas into `msgspec.Struct` sources (the rules are in
gen_rest.py's docstring); `param_type` types a parameter or a body property.
"""

from __future__ import annotations

import keyword
import re
from typing import Any

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


#: Wire names no rule makes readable: the reactions.
SPELLED = {"+1": "plus_one", "-1": "minus_one"}


def snake(name: str) -> str:
    """A wire name as a Python identifier: `-`, `[]` and the like become `_`."""
    if name in SPELLED:
        return SPELLED[name]
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
            extended = self._extension(schema, hint, sink)
            if extended is not None:
                return extended
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

    def _extension(self, schema: dict[str, Any], hint: str, sink: Models) -> str | None:
        """`allOf: [component, inline objects]` as a subclass of the component's struct.

        So `issues.update`'s answer (an issue with `suggestions`) is an `Issue`.
        """
        first, *rest = schema["allOf"]
        name = ref_name(first)
        if name is None or any(ref_name(p) is not None for p in rest):
            return None
        base = self.type_of(first, hint, sink)
        if base not in self.shared.component_class.values():
            return None
        own = self._merged(self.spec.resolve(first))["properties"]
        extra = self._merged({"allOf": rest})
        props = {k: v for k, v in extra.get("properties", {}).items() if k not in own}
        if not props:
            return base
        added = {"type": "object", "properties": props, "required": extra.get("required", [])}
        return sink._declare(hint, added, None, key=schema, base=base)

    def _declare(
        self,
        hint: str,
        schema: dict[str, Any],
        component: str | None,
        key: Any = None,
        base: str = "Model",
    ) -> str:
        """Make a struct for `schema` once (by the identity of `key`, else of `schema`)."""
        key = schema if key is None else key
        if id(key) in self.declared:
            return self.declared[id(key)]
        self.kept.append(key)  # alive, so that its id is never reused
        cls = self.declared[id(key)] = self._unique(hint)
        self.classes[cls] = ""
        self.classes[cls] = self._struct(cls, schema, component, base)
        return cls

    def _unique(self, name: str) -> str:
        cls, n = name, 2
        while cls in self.classes or cls in self.shared.classes or cls in RESERVED:
            cls, n = f"{name}{n}", n + 1
        return cls

    def _struct(
        self, cls: str, schema: dict[str, Any], component: str | None, base: str = "Model"
    ) -> str:
        required = set(schema.get("required", []))
        lines = [f"class {cls}({base}):"]
        title = (schema.get("title") or "").strip().splitlines()
        doc = title[0] if title else (f"The `{component}` schema." if component else "")
        doc = doc or (f"`{base}` and more." if base != "Model" else "")
        lines.append(f'    """{docline(doc or cls)}"""')
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


def docline(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', "'''").strip().rstrip('"')[:200]
