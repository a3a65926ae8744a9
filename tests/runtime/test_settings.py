"""Deployment settings: validation at `serve run`, and no secret where it is not needed."""

from __future__ import annotations

import pytest

from actors.deploy import build_settings
from actors.settings import load_bot
from ghbot.errors import ConfigError


def _env(pem: bytes) -> dict[str, str]:
    return {
        "GITHUB_APP_ID": "1",
        "GITHUB_PRIVATE_KEY": pem.decode(),
        "GITHUB_WEBHOOK_SECRET": "topsecret",
        "GITHUB_API_URL": "http://127.0.0.1:9",
    }


def test_shards_get_neither_the_key_nor_the_webhook_secrets(pem_pkcs8: bytes) -> None:
    runtime = build_settings({"bot": "examples.greeter:Greeter"}, _env(pem_pkcs8))
    assert runtime.settings.private_key and runtime.settings.webhook_secrets
    shards = runtime.for_shards()
    assert shards.settings.private_key is None
    assert shards.settings.webhook_secrets == ()
    assert shards.settings.api_url == runtime.settings.api_url
    assert "topsecret" not in repr(runtime) and "PRIVATE" not in repr(runtime)


def test_defaults_and_arguments(pem_pkcs8: bytes) -> None:
    runtime = build_settings({"bot": "examples.greeter:Greeter", "shards": "3"}, _env(pem_pkcs8))
    assert (runtime.shards, runtime.vshards) == (3, 3)
    assert runtime.pace_writes == 1.0
    off = build_settings({"bot": "examples.greeter:Greeter", "pace_writes": "0"}, _env(pem_pkcs8))
    assert off.pace_writes is None
    assert runtime.redeliver_every == 120.0
    args = {"bot": "examples.greeter:Greeter", "redeliver_every": "0"}
    assert build_settings(args, _env(pem_pkcs8)).redeliver_every == 0


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        build_settings({"bot": "nowhere:Bot", "shards": "0", "vshards": "x"}, {})
    text = "\n".join(caught.value.problems)
    for expected in ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET", "nowhere"):
        assert expected in text
    assert "shards='0'" in text and "vshards='x'" in text


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("examples.greeter", "must look like"),
        ("examples.greeter:Greeted", "not an InstallationActor"),
    ],
)
def test_a_bot_path_that_is_not_a_bot_is_refused(path: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        load_bot(path)
