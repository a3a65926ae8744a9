"""The base of every webhook payload model."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

__all__ = ["Change", "Model"]

T = TypeVar("T")


class Model(msgspec.Struct, omit_defaults=True, gc=False):
    """A lenient, typed view of (part of) a webhook payload.

    Unknown fields are ignored, because GitHub adds fields every month. A field the
    webhook schema does not require is optional, and so is one it requires that real
    payloads leave out (the generator's `LENIENT`); the others are required, and a
    payload without one is `MalformedPayload`. `gc=False` is safe because a decoded payload is a
    tree: it holds no reference cycles unless a caller builds one by mutation.
    Subclasses set `kw_only=True` themselves (msgspec does not inherit it).
    """


class Change(Model, Generic[T], kw_only=True):
    """A field's value before an edit (`from`) and, for a few fields, after it (`to`).

    GitHub sends these under `changes` in `edited`, `renamed`, `transferred`, ...
    deliveries; `from` is a Python keyword, hence `from_`.
    """

    from_: T | None = msgspec.field(default=None, name="from")
    to: T | None = None
