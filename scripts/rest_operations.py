"""One operation of GitHub's REST description as a method and an `Op`, for gen_rest.py."""

from __future__ import annotations

import re
from typing import Any

from rest_schemas import SCALARS, Models, Spec, camel, docline, nullable, ref_name, snake


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
            if "content_type" not in self.taken:  # a release asset is sent as its own type
                self.taken.add("content_type")
                self.args.append((1, f"content_type: str = {self.content_type!r}"))
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
        summary = docline(self.op.get("summary") or self.op["operationId"])
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
            kinds = list(dict.fromkeys(param_type(spec, v) for v in schema[key]))
            if "Any" in kinds:
                return "Any"
            union = " | ".join(kinds)
            return union + optional if "None" not in union else union
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
