"""Logs: one JSON object per line (or plain text), with secrets masked.

`configure(level, fmt)` sets up the ``ghbot`` loggers of a process (the runtime calls
it in every actor and replica) and, when nothing else has, the root logger, so a bot's
own loggers come out the same way. A line carries `timestamp`, `level`, `logger` and
`message`, and whichever of `FIELDS` the call passed in ``extra=``::

    log.warning("handler failed", extra={"event_id": guid, "installation_id": 42,
                                         "operation": "welcome", "error_type": "Timeout"})

Whatever the message says, installation and personal tokens show only their first and
last four characters; JWTs, private keys, webhook signatures and `Authorization`
values never appear (`mask`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final, TextIO

__all__ = ["FIELDS", "FORMATS", "JsonFormatter", "TextFormatter", "configure", "mask"]

#: The structured fields a call may pass in ``extra=`` (DESIGN.md, "Observability").
FIELDS: Final = (
    "event_id",
    "installation_id",
    "repository",
    "operation",
    "duration_ms",
    "error_type",
)
FORMATS: Final = ("json", "text")

_MASKS: Final = (
    # PEM private keys, whole (or to the end, if cut).
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END[^-]*-----|$)", re.S), "[key]"),
    # Authorization header values (token, Bearer JWT, Basic).
    (re.compile(r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',}\n]+"), r"\1[redacted]"),
    # JWTs: three base64url parts, the first a JSON header ("eyJ").
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), "[jwt]"),
    # Webhook signatures.
    (re.compile(r"\bsha(1|256)=[0-9a-fA-F]{40,64}\b"), r"sha\1=[redacted]"),
    # GitHub tokens (ghs_ installation, ghp_/github_pat_ personal, gho_, ghu_, ghr_):
    # the first and last four characters only.
    (
        re.compile(r"\b((?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{4})[A-Za-z0-9_]+([A-Za-z0-9]{4})\b"),
        r"\1…\2",
    ),
)


def mask(text: str) -> str:
    """Return `text` with tokens cut to their ends and keys, JWTs and signatures removed."""
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
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = mask(value) if isinstance(value, str) else value
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
        extras = [f"{n}={getattr(record, n)}" for n in FIELDS if getattr(record, n, None)]
        return mask(f"{line} [{' '.join(extras)}]" if extras else line)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """ghbot's own handler, told apart so `configure` can replace it."""


def configure(level: str = "INFO", fmt: str = "json", *, stream: TextIO | None = None) -> None:
    """Send the ``ghbot`` loggers (and an unconfigured root) to `stream` (stderr) in `fmt`.

    Calling it again replaces the handler it installed before; handlers others
    installed are left alone. Raises `ValueError` for an unknown `fmt`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    targets = [logging.getLogger("ghbot")]
    if not [h for h in root.handlers if not isinstance(h, _Handler)]:
        targets.append(root)
        root.setLevel(level)
    for logger in targets:
        for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
    ghbot = logging.getLogger("ghbot")
    ghbot.setLevel(level)
    ghbot.propagate = False
