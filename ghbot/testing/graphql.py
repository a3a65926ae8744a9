"""A small GraphQL executor for the fake GitHub: enough for the queries bots send.

It parses operations, aliases, arguments, variables and nested selections (no fragments
or directives) and executes them over plain dicts: a field is looked up in
`resolvers[(type, field)]` first, then as the snake_case key of the object. Errors use
GitHub's shapes (`type`, `path`, `message`).
https://docs.github.com/en/graphql/guides/forming-calls-with-graphql
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Field", "GraphQLSyntaxError", "Resolvers", "execute", "parse"]

#: (type name, field name) → fn(parent, args) → (value, type name of the value)
Resolvers = Mapping[tuple[str, str], Callable[[Any, dict[str, Any]], tuple[Any, str]]]

_TOKEN = re.compile(
    r"(?P<skip>[\s,]+|#[^\n]*)|(?P<punct>\.\.\.|[{}():!$=\[\]@])"
    r'|(?P<name>[_A-Za-z]\w*)|(?P<number>-?\d+(?:\.\d+)?)|(?P<string>"(?:[^"\\]|\\.)*")'
)


class GraphQLSyntaxError(ValueError):
    """The query is not GraphQL this executor understands."""


@dataclass(slots=True)
class Field:
    name: str
    alias: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    selections: list[Field] = field(default_factory=list)


class _Parser:
    def __init__(self, text: str, variables: Mapping[str, Any]) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            found = _TOKEN.match(text, pos)
            if found is None:
                raise GraphQLSyntaxError(f"unexpected character {text[pos]!r} at {pos}")
            kind = found.lastgroup or "skip"
            if kind != "skip":
                self.tokens.append((kind, found.group()))
            pos = found.end()
        self.pos = 0
        self.variables = variables

    def peek(self) -> str:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> str:
        value = self.peek()
        if not value or (expected is not None and value != expected):
            raise GraphQLSyntaxError(
                f"expected {expected or 'a token'}, got {value or 'the end'!r}"
            )
        self.pos += 1
        return value

    def operation(self) -> tuple[str, list[Field]]:
        kind = "query"
        if self.peek() in ("query", "mutation", "subscription"):
            kind = self.take()
            if self.peek() not in ("{", "("):
                self.take()  # the operation's name
            if self.peek() == "(":
                self._skip_group("(", ")")  # variable definitions: values come from JSON
        return kind, self.selection_set()

    def selection_set(self) -> list[Field]:
        self.take("{")
        fields = []
        while self.peek() != "}":
            fields.append(self.field())
        self.take("}")
        return fields

    def field(self) -> Field:
        name, alias = self.take(), None
        if self.peek() == ":":
            self.take(":")
            alias, name = name, self.take()
        args: dict[str, Any] = {}
        if self.peek() == "(":
            self.take("(")
            while self.peek() != ")":
                key = self.take()
                self.take(":")
                args[key] = self.value()
            self.take(")")
        selections = self.selection_set() if self.peek() == "{" else []
        return Field(name, alias, args, selections)

    def value(self) -> Any:
        lexeme = self.take()
        if lexeme == "$":
            return self.variables.get(self.take())
        if lexeme == "[":
            items = []
            while self.peek() != "]":
                items.append(self.value())
            self.take("]")
            return items
        kind = self.tokens[self.pos - 1][0]
        if kind in ("string", "number"):
            return json.loads(lexeme)
        return {"true": True, "false": False, "null": None}.get(lexeme, lexeme)

    def _skip_group(self, open_: str, close: str) -> None:
        depth = 0
        while True:
            token = self.take()
            depth += (token == open_) - (token == close)
            if depth == 0:
                return


def parse(query: str, variables: Mapping[str, Any] | None = None) -> tuple[str, list[Field]]:
    """Parse one operation into its kind and top-level fields (variables substituted)."""
    return _Parser(query, variables or {}).operation()


def execute(
    query: str, variables: Mapping[str, Any] | None, root: Any, resolvers: Resolvers
) -> dict[str, Any]:
    """Execute `query` from `root` (type "Query"); return `{"data": …}` and any `errors`."""
    try:
        _, fields = parse(query, variables)
    except GraphQLSyntaxError as exc:
        return {"errors": [{"message": f"Parse error: {exc}"}]}
    errors: list[dict[str, Any]] = []
    data = _select("Query", root, fields, resolvers, errors, [])
    return {"data": data, "errors": errors} if errors else {"data": data}


def _select(
    type_name: str,
    obj: Any,
    fields: list[Field],
    resolvers: Resolvers,
    errors: list[dict[str, Any]],
    path: list[str],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields:
        key = f.alias or f.name
        where = [*path, key]
        if f.name == "__typename":
            out[key] = type_name
            continue
        resolver = resolvers.get((type_name, f.name))
        if resolver is not None:
            try:
                value, value_type = resolver(obj, f.args)
            except LookupError as exc:
                errors.append({"type": "NOT_FOUND", "path": where, "message": str(exc.args[0])})
                out[key] = None
                continue
        elif isinstance(obj, Mapping) and _snake(f.name) in obj:
            value, value_type = obj[_snake(f.name)], "Object"
        else:
            message = f"Field '{f.name}' doesn't exist on type '{type_name}'"
            undefined = {"code": "undefinedField", "typeName": type_name, "fieldName": f.name}
            errors.append({"path": where, "message": message, "extensions": undefined})
            continue
        if f.selections and isinstance(value, list):
            value = [_select(value_type, v, f.selections, resolvers, errors, where) for v in value]
        elif f.selections and value is not None:
            value = _select(value_type, value, f.selections, resolvers, errors, where)
        out[key] = value
    return out


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()
