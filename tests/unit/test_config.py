"""Settings from the environment: every problem at once, nothing secret in repr."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import pytest

from ghbot.client import ClientOptions
from ghbot.config import Settings, graphql_url, parse_duration
from ghbot.errors import ConfigError


def _env(pem: bytes, **extra: str) -> dict[str, str]:
    return {
        "GITHUB_APP_ID": "12345",
        "GITHUB_PRIVATE_KEY": pem.decode(),
        "GITHUB_WEBHOOK_SECRET": "new-secret,old-secret",
        **extra,
    }


def test_defaults(pem_pkcs8: bytes) -> None:
    settings = Settings.from_env(_env(pem_pkcs8))
    assert settings.app_id == 12345
    assert settings.webhook_secrets == ("new-secret", "old-secret")
    assert settings.api_url == "https://api.github.com"
    assert settings.graphql_url == "https://api.github.com/graphql"
    assert settings.rate_limit_margin == 0.1
    assert settings.token_cache_ttl == 55 * 60
    assert settings.max_retries == 3
    assert settings.request_timeout == 30
    assert settings.log_level == "INFO"
    assert settings.journal_url.startswith("sqlite:///")


@pytest.mark.parametrize(("raw", "connect"), [(None, 10.0), ("60", 10.0), ("8", 4.0)])
def test_a_connection_must_be_made_within_10_s_or_half_the_timeout_if_less(
    raw: str | None, connect: float, pem_pkcs8: bytes
) -> None:
    """README: `REQUEST_TIMEOUT` (30; a connection must be made within 10 s, or half of
    it if less), as the clients' options are built from the settings."""
    env = _env(pem_pkcs8) if raw is None else _env(pem_pkcs8, REQUEST_TIMEOUT=raw)
    timeout = ClientOptions.from_settings(Settings.from_env(env)).client_timeout
    assert (timeout.total, timeout.sock_connect) == (float(raw or 30), connect)


def test_every_problem_is_listed_at_once() -> None:
    env = {
        "GITHUB_PRIVATE_KEY": "/nowhere/key.pem",
        "GITHUB_WEBHOOK_SECRET": "a,,b",
        "RATE_LIMIT_MARGIN": "0.9",
        "MAX_RETRIES": "many",
        "REQUEST_TIMEOUT": "-1",
        "LOG_LEVEL": "chatty",
        "GHBOT_JOURNAL_URL": "mysql://x",
        "GITHUB_API_URL": "api.example.com",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    problems = caught.value.problems
    text = str(caught.value)
    for name in (
        "GITHUB_APP_ID",
        "GITHUB_PRIVATE_KEY",
        "GITHUB_WEBHOOK_SECRET",
        "RATE_LIMIT_MARGIN",
        "MAX_RETRIES",
        "REQUEST_TIMEOUT",
        "LOG_LEVEL",
        "GHBOT_JOURNAL_URL",
        "GITHUB_API_URL",
    ):
        assert any(name in p for p in problems), name
    assert f"{len(problems)} configuration problems" in text


def test_unreadable_key_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    env = {"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": str(bad), "GITHUB_WEBHOOK_SECRET": "s"}
    with pytest.raises(ConfigError, match="GITHUB_PRIVATE_KEY: the private key is not a valid PEM"):
        Settings.from_env(env)


def test_a_base64_encoded_key_travels_as_the_key_not_as_a_path(pem_pkcs8: bytes) -> None:
    settings = Settings.from_env(
        {**_env(pem_pkcs8), "GITHUB_PRIVATE_KEY": base64.b64encode(pem_pkcs8).decode()}
    )
    assert settings.private_key_path is None and settings.private_key is not None


def test_repr_shows_no_secret(pem_pkcs8: bytes) -> None:
    journal = "postgresql://ghbot:pg-password@db.example/ghbot"
    settings = Settings.from_env(_env(pem_pkcs8, GHBOT_JOURNAL_URL=journal))
    text = repr(settings)
    assert "new-secret" not in text and "PRIVATE KEY" not in text
    assert "pg-password" not in text and settings.journal_url == journal
    assert "12345" in text


def test_client_id_and_ghes(pem_pkcs8: bytes) -> None:
    env = _env(pem_pkcs8, GITHUB_API_URL="https://ghe.example.com/api/v3/")
    del env["GITHUB_APP_ID"]
    env["GITHUB_CLIENT_ID"] = "Iv23liAbCd"
    settings = Settings.from_env(env)
    assert settings.app_id == "Iv23liAbCd"
    assert settings.api_url == "https://ghe.example.com/api/v3"
    assert settings.graphql_url == "https://ghe.example.com/api/graphql"


def test_a_client_id_in_the_app_id_variable_is_pointed_out(pem_pkcs8: bytes) -> None:
    with pytest.raises(ConfigError, match="GITHUB_CLIENT_ID"):
        Settings.from_env(_env(pem_pkcs8, GITHUB_APP_ID="Iv23liAbCd"))


def test_values_are_read_as_an_operator_writes_them(pem_pkcs8: bytes) -> None:
    """Spaces around a list's items, a setting of spaces only (as unset), the
    `postgres://` scheme, and the app ID over the client ID when both are set."""
    env = _env(pem_pkcs8, GITHUB_WEBHOOK_SECRET=" new , old ", MAX_RETRIES="  ")
    env |= {"GHBOT_JOURNAL_URL": "postgres://ghbot@db/ghbot", "GITHUB_CLIENT_ID": "Iv23li"}
    settings = Settings.from_env(env)
    assert settings.webhook_secrets == ("new", "old")
    assert settings.max_retries == 3
    assert settings.journal_url == "postgres://ghbot@db/ghbot"
    assert settings.app_id == 12345


def test_a_webhook_secret_of_spaces_is_no_secret(pem_pkcs8: bytes) -> None:
    with pytest.raises(ConfigError, match="GITHUB_WEBHOOK_SECRET is not set or empty"):
        Settings.from_env(_env(pem_pkcs8, GITHUB_WEBHOOK_SECRET="   "))


def test_parts_can_be_optional() -> None:
    settings = Settings.from_env({}, require_app=False, require_webhooks=False)
    assert settings.app_id is None and settings.webhook_secrets == ()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30), ("30s", 30), ("55m", 3300), ("1h", 3600), ("0.5", 0.5), (" 2H ", 7200)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "abc", "-5", "nan"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_graphql_url() -> None:
    assert graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url("https://h/api/v3") == "https://h/api/graphql"
    assert graphql_url("https://h/v3") == "https://h/v3/graphql"  # not GHES's /api/v3


def test_log_level_accepts_the_operations_guides_names() -> None:
    base = {"GITHUB_APP_ID": "1"}

    def level(value: str) -> str:
        env = {**base, "LOG_LEVEL": value}
        return Settings.from_env(env, require_app=False, require_webhooks=False).log_level

    assert (level("WARN"), level("warning"), level("TRACE"), level("debug")) == (
        "WARNING",
        "WARNING",
        "TRACE",
        "DEBUG",
    )
    with pytest.raises(ConfigError, match=r"LOG_LEVEL='chatty'.*TRACE, DEBUG"):
        level("chatty")


@pytest.mark.parametrize(
    ("name", "field", "taken", "refused", "expected"),
    [
        (
            "RATE_LIMIT_MARGIN",
            "rate_limit_margin",
            {"0": 0, "0.5": 0.5},
            ["-0.01", "0.51"],
            "between 0 and 0.5",
        ),
        (
            "TOKEN_CACHE_TTL",
            "token_cache_ttl",
            {"1m": 60, "1h": 3600, "30m": 1800},
            ["59", "3601"],
            "between 1m and 1h (tokens live one hour)",
        ),
        ("MAX_RETRIES", "max_retries", {"0": 0, "10": 10}, ["-1", "11"], "between 0 and 10"),
        (
            "REQUEST_TIMEOUT",
            "request_timeout",
            {"0.5": 0.5, "10m": 600},
            ["0", "601"],
            "between 0 and 600 seconds",
        ),
        ("LOG_FORMAT", "log_format", {"text": "text", "JSON": "json"}, ["xml"], "json or text"),
    ],
)
def test_each_setting_takes_its_range_and_names_it_when_refusing(
    pem_pkcs8: bytes,
    name: str,
    field: str,
    taken: dict[str, object],
    refused: list[str],
    expected: str,
) -> None:
    for raw, value in taken.items():
        assert getattr(Settings.from_env(_env(pem_pkcs8, **{name: raw})), field) == value
    for raw in refused:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(_env(pem_pkcs8, **{name: raw}))
        assert caught.value.problems == (f"{name}={raw!r} is out of range; expected {expected}",)


def test_a_setting_that_does_not_parse_names_what_it_expects(pem_pkcs8: bytes) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(_env(pem_pkcs8, MAX_RETRIES="many", LOG_LEVEL="chatty"))
    assert caught.value.problems == (
        "MAX_RETRIES='many' is not valid; expected between 0 and 10",
        "LOG_LEVEL='chatty' is not valid; expected one of "
        "TRACE, DEBUG, INFO, WARN, WARNING, ERROR, CRITICAL",
    )


def test_each_problem_says_what_to_set(pem_pkcs8: bytes) -> None:
    env = {"GITHUB_WEBHOOK_SECRET": "a,,b", "GHBOT_JOURNAL_URL": "mysql://db/ghbot"}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.problems == (
        "GITHUB_APP_ID (or GITHUB_CLIENT_ID) is not set",
        "GITHUB_PRIVATE_KEY is not set (PEM text or a path to the .pem file)",
        "GITHUB_WEBHOOK_SECRET has an empty secret between commas",
        "GHBOT_JOURNAL_URL must start with sqlite:/// or postgresql:// "
        "(got a URL starting 'mysql')",
    )
    with pytest.raises(ConfigError) as unset:
        Settings.from_env(_env(pem_pkcs8, GITHUB_WEBHOOK_SECRET=""))
    assert unset.value.problems == ("GITHUB_WEBHOOK_SECRET is not set or empty",)
    # Probot's names, set where ghbot's are not: said so, never with the value.
    probot = {"APP_ID": "12", "PRIVATE_KEY_PATH": "/keys/app.pem", "WEBHOOK_SECRET": "sEcr3t"}
    with pytest.raises(ConfigError) as moved:
        Settings.from_env(probot)
    assert moved.value.problems == (
        "GITHUB_APP_ID (or GITHUB_CLIENT_ID) is not set; APP_ID is set, Probot's name for "
        "it: ghbot reads the GITHUB_ one",
        "GITHUB_PRIVATE_KEY is not set (PEM text or a path to the .pem file); "
        "PRIVATE_KEY_PATH is set, Probot's name for it: ghbot reads the GITHUB_ one",
        "GITHUB_WEBHOOK_SECRET is not set or empty; WEBHOOK_SECRET is set, Probot's name "
        "for it: ghbot reads the GITHUB_ one",
    )
    no_key = Settings.from_env({}, require_app=False, require_webhooks=False)
    with pytest.raises(ConfigError) as keyless:
        no_key.load_key()
    assert str(keyless.value) == "no private key: set GITHUB_PRIVATE_KEY (PEM text or a path)"


def test_urls_lose_a_trailing_slash_and_the_journal_defaults_under_the_working_folder(
    pem_pkcs8: bytes,
) -> None:
    settings = Settings.from_env(_env(pem_pkcs8, GITHUB_API_URL="https://ghe.example/api/v3/"))
    assert settings.api_url == "https://ghe.example/api/v3"
    assert settings.graphql_url == "https://ghe.example/api/graphql"
    assert graphql_url("https://api.github.com/") == "https://api.github.com/graphql"
    assert settings.journal_url == "sqlite://" + str(Path.cwd() / "data" / "journal")


def test_a_key_file_missing_where_the_settings_are_used_is_named(
    pem_pkcs8: bytes, tmp_path: Path
) -> None:
    key = tmp_path / "app.pem"
    key.write_bytes(pem_pkcs8)
    read_here = Settings.from_env(_env(pem_pkcs8, GITHUB_PRIVATE_KEY=str(key)))
    elsewhere = replace(read_here, private_key=None)  # as sent to another node
    key.unlink()
    with pytest.raises(ConfigError) as caught:
        elsewhere.load_key()
    assert str(caught.value) == (
        f"the private key file {str(key)!r} is not here: GITHUB_PRIVATE_KEY names a "
        "file, which must exist at that path on the node that reads it"
    )


def test_settings_come_from_the_process_environment_by_default(
    pem_pkcs8: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _env(pem_pkcs8, MAX_RETRIES="5").items():
        monkeypatch.setenv(name, value)
    assert Settings.from_env().max_retries == 5


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///var/lib/ghbot/journal",
        "sqlite:///var/lib/my%20bots?shards=4",
        "postgresql://ghbot@db/ghbot",
        "postgres://db/g",
        "postgresql://u@h1:5432,h2:5433/g?target_session_attrs=read-write",
        "postgresql://u@[::1]:5432/g?sslmode=require&schema=bots",
        "postgresql:///g?host=/var/run/postgresql",
    ],
)
def test_each_journal_scheme_is_taken(pem_pkcs8: bytes, url: str) -> None:
    assert Settings.from_env(_env(pem_pkcs8, GHBOT_JOURNAL_URL=url)).journal_url == url


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://u:p@db:54x2/ghbot", "a port is not a number"),
        ("postgresql://u@h1:5432,h2:99999/ghbot", "a port is not a number"),
        ("postgresql://u:p[ss@db/ghbot", "percent-encode special characters"),
        ("postgresql://db/ghbot?schema=bots-prod", "plain SQL identifier"),
        ("postgresql://db/ghbot?shards=two", "shards must be a positive integer"),
        ("sqlite:///var/lib/ghbot?shards=0", "shards must be a positive integer"),
        ("sqlite:///var/lib/ghbot?mode=ro", "must look like sqlite:///path/to/dir"),
    ],
)
def test_a_journal_url_that_would_not_open_is_refused_with_the_settings(
    pem_pkcs8: bytes, url: str, said: str
) -> None:
    """Said at start, in one line: each shard used to fail as it opened the journal,
    a `ValueError` for a bad port, and the deployment never became ready."""
    with pytest.raises(ConfigError, match=f"GHBOT_JOURNAL_URL: .*{said}"):
        Settings.from_env(_env(pem_pkcs8, GHBOT_JOURNAL_URL=url))


def test_an_app_id_of_other_digits_is_not_a_number(pem_pkcs8: bytes) -> None:
    # "²".isdigit() is true, and int("²") raised ValueError past the settings' checks.
    with pytest.raises(ConfigError, match="GITHUB_APP_ID='1²' is not a number"):
        Settings.from_env(_env(pem_pkcs8, GITHUB_APP_ID="1²"))
