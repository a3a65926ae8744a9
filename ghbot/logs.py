"""Logs: one JSON object per line (or plain text), with secrets masked.

`configure(level, fmt)` sets up the ``ghbot`` loggers of a process (the runtime calls
it in every actor and replica) and, when nothing else has, the root logger, so a bot's
own loggers come out the same way. A line carries `timestamp`, `level`, `logger` and
`message`, and whichever of `FIELDS` the call passed in ``extra=``::

    log.warning("handler failed", extra={"event_id": guid, "installation_id": 42,
                                         "operation": "welcome", "error_type": "Timeout"})

Whatever the message says, GitHub's tokens (of any length: installation tokens are
growing from 40 characters to a JWT of about 520) show only their first and last four
characters; JWTs, private keys, webhook signatures and `Authorization` values never
appear (`mask`).

A delivery's fields need not be passed at every call: `log_context(event_id=...,
installation_id=..., repository=..., operation=...)` sets them in a context variable
for the code it wraps (and the tasks created inside it), and the formatters fill any
of `FIELDS` a line did not pass from it, so the client's retry, rate-limit and breaker
lines carry the delivery they are about. E-mail addresses are masked too
(`user@example.com` → `u***@example.com`).

Levels are Python's plus `TRACE` (5, below `DEBUG`); `WARN` is another name for
`WARNING` (`level_name`). `LogLimiter` keeps a flood of alike lines (refused
deliveries during an attack) down to a few a minute.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from ghbot.errors import UsageError

__all__ = [
    "FIELDS",
    "FORMATS",
    "LEVELS",
    "TRACE",
    "JsonFormatter",
    "LogLimiter",
    "TextFormatter",
    "configure",
    "current_fields",
    "level_name",
    "log_context",
    "mask",
    "shape",
]

#: The structured fields a call may pass in ``extra=`` (docs/operations.md, "Logs").
FIELDS: Final = (
    "event_id",
    "installation_id",
    "repository",
    "operation",
    "duration_ms",
    "error_type",
    "http_status",
    "suppressed",
)
FORMATS: Final = ("json", "text")

_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("ghbot_log_context", default=None)


def current_fields() -> dict[str, Any]:
    """Return the fields `log_context` set for the running code (a copy; empty when none)."""
    fields = _CONTEXT.get()
    return dict(fields) if fields else {}


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Give every line logged inside (tasks created inside included) these `FIELDS`.

    Nested contexts add to the outer one; a field given as None is left out. A
    line's own ``extra=`` wins over the context. Cheap: one dict and one context
    variable set, whatever the level.
    """
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise UsageError(f"log fields {sorted(unknown)} are not among {', '.join(FIELDS)}")
    merged = {**(_CONTEXT.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield merged
    finally:
        _CONTEXT.reset(token)


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The `FIELDS` of a line: its own ``extra=``, then the `log_context` of its caller."""
    context = _CONTEXT.get() or {}
    found: dict[str, Any] = {}
    for name in FIELDS:
        value = getattr(record, name, None)
        if value is None:
            value = context.get(name)
        if value is not None:
            found[name] = value
    return found


def shape(value: Any, depth: int = 1) -> Any:
    """Describe the shape of a body, never its content: keys and type names.

    A dict gives its keys with their values' shapes (to `depth` levels; below, its
    number of keys), a list only its length, `None` "null", anything else its type's
    name.
    """
    if isinstance(value, dict):
        if depth <= 0:
            return f"object[{len(value)}]"
        return {str(k): shape(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        return f"array[{len(value)}]"
    if value is None:
        return "null"
    return type(value).__name__


#: Below DEBUG: every request and decision, for chasing one problem down.
TRACE: Final = 5
logging.addLevelName(TRACE, "TRACE")

#: The level names `LOG_LEVEL` takes (the operations guide's and Python's), by number.
LEVELS: Final = {
    "TRACE": TRACE,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


def level_name(value: str) -> str:
    """Return the canonical name of level `value` (any case; `WARN` gives `WARNING`).

    Raises `UsageError` for a name not in `LEVELS`.
    """
    number = LEVELS.get(value.strip().upper())
    if number is None:
        raise UsageError(f"log level {value!r} is not one of {', '.join(LEVELS)}")
    return logging.getLevelName(number)


_SHORT_TOKEN: Final = 16
"""A token shorter than this shows only its first four characters (its prefix)."""


def _cut_token(match: re.Match[str]) -> str:
    token = match.group(0)
    if len(token) < _SHORT_TOKEN:
        return token[:4] + "…"
    return f"{token[:4]}…{token[-4:]}"


_MASKS: Final[tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...]] = (
    # GitHub tokens (ghs_ installation, ghp_/github_pat_ personal, gho_, ghu_, ghr_),
    # old and new formats: GitHub's new installation tokens are `ghs_APPID_JWT`,
    # base64url parts joined by dots. First, so that no other mask leaves part of
    # one in the line; a trailing dot is the sentence's, not the token's.
    (re.compile(r"\b(?:gh[pousr]_|github_pat_)[A-Za-z0-9_.-]*[A-Za-z0-9_-]"), _cut_token),
    # PEM private keys, whole (or to the end, if cut).
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END[^-]*-----|$)", re.S), "[key]"),
    # Authorization header values (token, Bearer JWT, Basic).
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',}\n]+"), r"\1[redacted]"),
    # JWTs: three base64url parts, the first a JSON header ("eyJ").
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), "[jwt]"),
    # Webhook signatures.
    (re.compile(r"\bsha(1|256)=[0-9a-fA-F]{40,64}\b"), r"sha\1=[redacted]"),
    # E-mail addresses (personal data): the first character of the local part stays.
    (
        re.compile(
            r"\b([A-Za-z0-9])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b"
        ),
        r"\1***@\2",
    ),
)


def mask(text: str) -> str:
    """Return `text` with tokens cut to their ends and keys, JWTs and signatures removed.

    A GitHub token of 16 characters or more keeps its first and last four characters
    (`ghs_…wxyz`); a shorter one only its first four, so no token shows more than
    eight characters, whatever its length or format. E-mail addresses keep their
    first character and their domain (`u***@example.com`).
    """
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask(record.getMessage()),
        }
        for name, value in _fields_of(record).items():
            # Numbers as numbers; anything else is written as its masked text.
            plain = value is None or isinstance(value, (bool, int, float))
            data[name] = value if plain else mask(value if isinstance(value, str) else str(value))
        if record.exc_info and record.exc_info[0] is not None:
            data.setdefault("error_type", record.exc_info[0].__name__)
            data["traceback"] = mask(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines for a terminal, masked like the JSON ones."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{n}={v}" for n, v in _fields_of(record).items()]
        return mask(f"{line} [{' '.join(extras)}]" if extras else line)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    held: int = 0


class LogLimiter:
    """About `burst` lines per `per` seconds of each kind; the rest are held back, counted.

    A token bucket per key: `burst` lines may come at once, then one more every
    `per / burst` seconds (so up to twice `burst` within the first `per`). Keys are
    kinds of line (an error type), never values an outsider chooses, since each key
    keeps a little state. Not thread-safe: one event loop (a Serve replica's) uses it.
    """

    def __init__(
        self, burst: int = 10, per: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if burst < 1 or per <= 0:
            raise UsageError("a log limiter needs burst >= 1 and per > 0")
        self.burst = burst
        self.per = per
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str) -> int | None:
        """Return None to hold a line of `key` back; else log it, saying this many were held.

        The number (often 0) is how many lines of `key` were held back since the last
        one allowed, for the line to report them.
        """
        now = self._clock()
        bucket = self._buckets.setdefault(key, _Bucket(float(self.burst), now))
        refill = (now - bucket.stamp) * self.burst / self.per
        bucket.tokens, bucket.stamp = min(float(self.burst), bucket.tokens + refill), now
        if bucket.tokens < 1:
            bucket.held += 1
            return None
        bucket.tokens -= 1
        held, bucket.held = bucket.held, 0
        return held


#: Received webhooks an ingress replica logs at INFO per second, unless the deployment's
#: `GHBOT_LOG_RECEIVED_PER_SECOND` says otherwise (validated by `actors.ray.deploy`).
DEFAULT_RECEIVED_PER_SECOND: Final = 10


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """ghbot's own handler, told apart so `configure` can replace it."""


def configure(level: str = "INFO", fmt: str = "json", *, stream: TextIO | None = None) -> None:
    """Send the ``ghbot`` loggers (and an unconfigured root) to `stream` in `fmt`.

    Without `stream`, lines go to the process's own stderr (`sys.__stderr__`), not to
    whatever `sys.stderr` has become: a Ray Serve replica (throughput-optimized, as
    deployed) turns `sys.stderr` into a Serve logger at INFO, which the replica's
    WARNING level drops, so the ingress's lines would vanish. In a Ray worker the
    process's stderr is its log file, which Ray streams to the driver.

    `level` is any name in `LEVELS` (`TRACE` and `WARN` included). Calling it again
    replaces the handler it installed before; handlers others installed are left
    alone. Raises `UsageError` for an unknown `level` or `fmt`.
    """
    if fmt not in FORMATS:
        raise UsageError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    number = LEVELS[level_name(level)]
    handler = _Handler(stream or sys.__stderr__ or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    ours = not [h for h in root.handlers if not isinstance(h, _Handler)]
    for logger in (logging.getLogger("ghbot"), root):
        # The one installed before goes, from root too once others configured it.
        for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
            logger.removeHandler(old)
    logging.getLogger("ghbot").addHandler(handler)
    if ours:
        root.addHandler(handler)
        root.setLevel(number)
    ghbot = logging.getLogger("ghbot")
    ghbot.setLevel(number)
    ghbot.propagate = False
