"""Settings from the environment, validated at start with every problem listed at once.

| variable | meaning | default |
|---|---|---|
| `GITHUB_APP_ID` or `GITHUB_CLIENT_ID` | the app's ID or client ID (the JWT's `iss`) | required |
| `GITHUB_PRIVATE_KEY` | PEM text, the PEM base64-encoded, or a path to the PEM file | required |
| `GITHUB_WEBHOOK_SECRET` | one or more secrets, comma-separated (rotation) | required |
| `GITHUB_API_URL` | REST base; `https://HOST/api/v3` on GHES | `https://api.github.com` |
| `RATE_LIMIT_MARGIN` | share of the budget kept back, 0 to 0.5 | `0.1` |
| `TOKEN_CACHE_TTL` | longest an installation token is cached, seconds (`55m`, `1h` work) | `55m` |
| `MAX_RETRIES` | retries of a failed request (a handler's attempts are its `max_attempts`) | `3` |
| `REQUEST_TIMEOUT` | seconds per request to GitHub (to connect: 10, or half if less) | `30` |
| `LOG_LEVEL` | `TRACE`, `DEBUG`, `INFO`, `WARN` (or `WARNING`), `ERROR`, `CRITICAL` | `INFO` |
| `LOG_FORMAT` | `json` (one object per line) or `text` | `json` |
| `GHBOT_JOURNAL_URL` | `sqlite:///abs/dir` or `postgresql://…` | `./data/journal`, made absolute |

With both `GITHUB_APP_ID` and `GITHUB_CLIENT_ID` set, the app ID is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from ghbot.auth import load_private_key
from ghbot.digits import whole_number
from ghbot.errors import ConfigError, UsageError
from ghbot.logs import FORMATS, LEVELS, level_name

__all__ = ["DEFAULT_API_URL", "UPLOADS_URL", "Settings", "graphql_url", "parse_duration"]

DEFAULT_API_URL = "https://api.github.com"
#: Where github.com takes uploads (release assets); GHES takes them under its own host.
UPLOADS_URL = "https://uploads.github.com"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings. Secrets are kept out of `repr`."""

    app_id: int | str | None
    private_key: bytes | None = field(repr=False)
    webhook_secrets: tuple[str, ...] = field(repr=False)
    api_url: str = DEFAULT_API_URL
    rate_limit_margin: float = 0.1
    token_cache_ttl: float = 3300.0
    max_retries: int = 3
    request_timeout: float = 30.0
    log_level: str = "INFO"
    #: Out of `repr` too: a PostgreSQL URL may hold a password.
    journal_url: str = field(default="", repr=False)
    log_format: str = "json"
    #: Where `private_key` was read from, when GITHUB_PRIVATE_KEY named a file: the
    #: Ray runtime then sends the path, never the key, and the app-auth actor reads it.
    private_key_path: str | None = None

    @property
    def graphql_url(self) -> str:
        """Return the GraphQL endpoint that goes with `api_url`."""
        return graphql_url(self.api_url)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        require_app: bool = True,
        require_webhooks: bool = True,
    ) -> Settings:
        """Read and validate settings; raise one `ConfigError` listing every problem.

        `require_app=False` allows no app ID and key (a client with a plain token);
        `require_webhooks=False` allows no webhook secret (a process that only calls
        GitHub).
        """
        env = os.environ if env is None else env
        problems: list[str] = []
        reader = _Reader(env, problems)
        app_id = _app_id(env, problems, required=require_app)
        private_key = _private_key(env, problems, required=require_app)
        secrets = _secrets(env, problems, required=require_webhooks)
        settings = cls(
            app_id=app_id,
            private_key=private_key,
            private_key_path=_key_path(env) if private_key is not None else None,
            webhook_secrets=secrets,
            api_url=_api_url(env, problems),
            rate_limit_margin=reader.get(
                "RATE_LIMIT_MARGIN", float, 0.1, lambda v: 0 <= v <= 0.5, "between 0 and 0.5"
            ),
            token_cache_ttl=reader.get(
                "TOKEN_CACHE_TTL",
                parse_duration,
                3300.0,
                lambda v: 60 <= v <= 3600,
                "between 1m and 1h (tokens live one hour)",
            ),
            max_retries=reader.get(
                "MAX_RETRIES", int, 3, lambda v: 0 <= v <= 10, "between 0 and 10"
            ),
            request_timeout=reader.get(
                "REQUEST_TIMEOUT",
                parse_duration,
                30.0,
                lambda v: 0 < v <= 600,
                "between 0 and 600 seconds",
            ),
            log_level=reader.get(
                "LOG_LEVEL", level_name, "INFO", lambda v: True, "one of " + ", ".join(LEVELS)
            ),
            journal_url=_journal_url(env, problems),
            log_format=reader.get(
                "LOG_FORMAT", str.lower, "json", lambda v: v in FORMATS, "json or text"
            ),
        )
        if problems:
            raise ConfigError(problems)
        return settings

    def without_key(self) -> Settings:
        """Return these settings with no key bytes, only the path the key came from (if any).

        `load_key` restores the key where it is needed (the Ray app-auth actor, on its
        own node), so the key itself never travels between processes.
        """
        return replace(self, private_key=None)

    def load_key(self) -> Settings:
        """Return these settings with the key read from `private_key_path` if it is absent.

        Raises `ConfigError` when there is neither a key nor a readable key file.
        """
        if self.private_key is not None:
            return self
        path = self.private_key_path
        if path is None:
            raise ConfigError("no private key: set GITHUB_PRIVATE_KEY (PEM text or a path)")
        # The path named a readable key file where the settings were read; here (another
        # node, later) it may not. It is a path, not key text, so the error can name it.
        if not os.path.isfile(path):
            raise ConfigError(
                f"the private key file {path!r} is not here: GITHUB_PRIVATE_KEY names a "
                "file, which must exist at that path on the node that reads it"
            )
        return replace(self, private_key=_pem_pkcs8(path))


class _Reader:
    """Read optional variables, collecting problems instead of raising at the first."""

    def __init__(self, env: Mapping[str, str], problems: list[str]) -> None:
        self.env = env
        self.problems = problems

    def get(
        self,
        name: str,
        parse: Callable[[str], T],
        default: T,
        valid: Callable[[T], bool],
        expected: str,
    ) -> T:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = parse(raw)
        except (ValueError, UsageError):
            self.problems.append(f"{name}={raw!r} is not valid; expected {expected}")
            return default
        if not valid(value):
            self.problems.append(f"{name}={raw!r} is out of range; expected {expected}")
            return default
        return value


def _probot(env: Mapping[str, str], *names: str) -> str:
    """A hint for a setting missing under ghbot's name but set under Probot's."""
    found = [name for name in names if env.get(name, "").strip()]
    if not found:
        return ""
    return f"; {found[0]} is set, Probot's name for it: ghbot reads the GITHUB_ one"


def _app_id(env: Mapping[str, str], problems: list[str], *, required: bool) -> int | str | None:
    raw = (env.get("GITHUB_APP_ID") or env.get("GITHUB_CLIENT_ID") or "").strip()
    if not raw:
        if required:
            problems.append(
                "GITHUB_APP_ID (or GITHUB_CLIENT_ID) is not set" + _probot(env, "APP_ID")
            )
        return None
    if (app_id := whole_number(raw)) is not None:
        return app_id
    if env.get("GITHUB_APP_ID", "").strip() == raw:
        problems.append(
            f"GITHUB_APP_ID={raw!r} is not a number; put a client ID in GITHUB_CLIENT_ID"
        )
    return raw


def _private_key(env: Mapping[str, str], problems: list[str], *, required: bool) -> bytes | None:
    raw = env.get("GITHUB_PRIVATE_KEY", "").strip()
    if not raw:
        if required:
            problems.append(
                "GITHUB_PRIVATE_KEY is not set (PEM text or a path to the .pem file)"
                + _probot(env, "PRIVATE_KEY", "PRIVATE_KEY_PATH")
            )
        return None
    try:
        return _pem_pkcs8(raw)
    except ConfigError as exc:
        problems.append(f"GITHUB_PRIVATE_KEY: {exc}")
        return None


def _pem_pkcs8(key: str) -> bytes:
    """Load the key (PEM text or a path) and return it as PKCS#8 PEM; `ConfigError` if bad."""
    from cryptography.hazmat.primitives import serialization

    return load_private_key(key).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _key_path(env: Mapping[str, str]) -> str | None:
    """Return GITHUB_PRIVATE_KEY as an absolute path when it names a file, else None
    (PEM text, or the PEM base64-encoded)."""
    raw = env.get("GITHUB_PRIVATE_KEY", "").strip()
    if raw.startswith("-----BEGIN"):
        return None
    path = os.path.abspath(os.path.expanduser(raw))
    return path if os.path.isfile(path) else None


def _secrets(env: Mapping[str, str], problems: list[str], *, required: bool) -> tuple[str, ...]:
    raw = env.get("GITHUB_WEBHOOK_SECRET")
    if raw is None or not raw.strip():
        if required:
            problems.append(
                "GITHUB_WEBHOOK_SECRET is not set or empty" + _probot(env, "WEBHOOK_SECRET")
            )
        return ()
    parts = [part.strip() for part in raw.split(",")]
    if any(not part for part in parts):
        problems.append("GITHUB_WEBHOOK_SECRET has an empty secret between commas")
    return tuple(part for part in parts if part)


def _api_url(env: Mapping[str, str], problems: list[str]) -> str:
    raw = env.get("GITHUB_API_URL", "").strip().rstrip("/")
    if not raw:
        return DEFAULT_API_URL
    if not raw.startswith(("https://", "http://")):
        problems.append(f"GITHUB_API_URL={raw!r} is not an http(s) URL")
        return DEFAULT_API_URL
    return raw


def _journal_url(env: Mapping[str, str], problems: list[str]) -> str:
    raw = env.get("GHBOT_JOURNAL_URL", "").strip()
    if not raw:
        return default_journal_url()
    if not raw.startswith(("sqlite:///", "postgresql://", "postgres://")):
        problems.append(
            "GHBOT_JOURNAL_URL must start with sqlite:/// or postgresql:// "
            f"(got a URL starting {raw.split(':', 1)[0]!r})"
        )
        return default_journal_url()
    from ghbot.journal import check_url

    try:
        check_url(raw)
    except UsageError as exc:
        problems.append(f"GHBOT_JOURNAL_URL: {exc}")
    return raw


def default_journal_url() -> str:
    """Return the embedded journal under `./data/journal`, as an absolute `sqlite:///` URL."""
    return "sqlite://" + os.path.abspath(os.path.join("data", "journal"))


def parse_duration(text: str) -> float:
    """Parse seconds given as `30`, `30s`, `55m`, `1h` or `1d`; raise `ValueError`
    otherwise."""
    text = text.strip().lower()
    factor = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}.get(text[-1:])
    number = text[:-1] if factor is not None else text
    value = float(number) * (factor or 1.0)
    if value != value or value < 0:  # NaN or negative
        raise ValueError(text)
    return value


def graphql_url(api_url: str) -> str:
    """Return the GraphQL endpoint for a REST base URL (GHES: `/api/v3` → `/api/graphql`)."""
    base = api_url.rstrip("/")
    if base.endswith("/api/v3"):
        return base[: -len("/v3")] + "/graphql"
    return base + "/graphql"
