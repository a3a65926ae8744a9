"""Logs: JSON lines with the structured fields, and no secret in any of them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from ghbot import logs
from ghbot.auth import AppAuth
from ghbot.config import Settings
from ghbot.errors import ConfigError

TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"
SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """A buffer to log into; ghbot's and the root logger's set-up is restored afterwards."""
    out = io.StringIO()
    ghbot = logging.getLogger("ghbot")
    root = logging.getLogger()
    before = (list(ghbot.handlers), ghbot.level, ghbot.propagate, list(root.handlers), root.level)
    yield out
    ghbot.handlers[:], ghbot.level, ghbot.propagate = before[0], before[1], before[2]
    root.handlers[:], root.level = before[3], before[4]


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_json_object_per_line_with_the_fields_given(captured: io.StringIO) -> None:
    logs.configure("INFO", "json", stream=captured)
    log = logging.getLogger("ghbot.test")
    log.debug("not shown at INFO")
    log.warning(
        "handler %s failed",
        "welcome",
        extra={"event_id": "guid-1", "installation_id": 42, "error_type": "Timeout"},
    )
    [line] = lines(captured)
    assert line["message"] == "handler welcome failed" and line["level"] == "warning"
    assert (line["event_id"], line["installation_id"], line["error_type"]) == (
        "guid-1",
        42,
        "Timeout",
    )
    assert line["logger"] == "ghbot.test" and str(line["timestamp"]).endswith("+00:00")
    assert "repository" not in line  # only the fields given


def test_an_exception_gives_its_type_and_a_masked_traceback(captured: io.StringIO) -> None:
    logs.configure("INFO", "json", stream=captured)
    try:
        raise RuntimeError(f"GitHub refused {TOKEN}")
    except RuntimeError:
        logging.getLogger("ghbot.test").exception("it broke")
    [line] = lines(captured)
    assert line["error_type"] == "RuntimeError"
    assert "RuntimeError" in str(line["traceback"]) and TOKEN not in str(line["traceback"])


def test_secrets_never_reach_a_line(captured: io.StringIO, pem_pkcs8: bytes) -> None:
    logs.configure("DEBUG", "json", stream=captured)
    jwt = AppAuth(1, pem_pkcs8).jwt()
    log = logging.getLogger("ghbot.test")
    log.info("token %s", TOKEN)
    log.info("headers %s", {"Authorization": f"Bearer {jwt}", "Accept": "json"})
    log.info("jwt %s", jwt)
    log.info("signature %s", SIGNATURE)
    log.info("key %s", pem_pkcs8.decode().strip())
    log.info("in a field", extra={"repository": f"o/r?token={TOKEN}"})
    text = captured.getvalue()
    for secret in (TOKEN, jwt, SIGNATURE[7:], "PRIVATE KEY", pem_pkcs8.decode().split()[4]):
        assert secret not in text
    got = lines(captured)
    assert got[0]["message"] == "token ghs_16C7…8B4a"
    assert "'Accept': 'json'" in str(got[1]["message"])
    assert got[2]["message"] == "jwt [jwt]" and got[3]["message"] == "signature sha256=[redacted]"
    assert got[4]["message"] == "key [key]"


def test_text_format_masks_too_and_reconfiguring_replaces_the_handler(
    captured: io.StringIO,
) -> None:
    logs.configure("INFO", "text", stream=captured)
    logs.configure("INFO", "text", stream=captured)
    logging.getLogger("ghbot.test").info("token %s", TOKEN, extra={"installation_id": 7})
    [line] = captured.getvalue().splitlines()
    assert line.endswith("ghbot.test: token ghs_16C7…8B4a [installation_id=7]")
    with pytest.raises(ValueError, match="log format"):
        logs.configure("INFO", "xml")


def test_log_format_is_a_setting() -> None:
    base = {"GITHUB_APP_ID": "1"}
    assert Settings.from_env(base, require_app=False, require_webhooks=False).log_format == "json"
    text = Settings.from_env(
        {**base, "LOG_FORMAT": "TEXT"}, require_app=False, require_webhooks=False
    )
    assert text.log_format == "text"
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        Settings.from_env({**base, "LOG_FORMAT": "xml"}, require_app=False, require_webhooks=False)
