"""Metrics through the OpenTelemetry API: instruments cost next to nothing until an SDK is set.

As with `ghbot.telemetry`'s spans, this module uses only `opentelemetry-api` (ghbot
depends on `opentelemetry-sdk` too: the Ray runtime's bridge records through it). The
instruments below are made once, at import, on the API's global meter; until the
process sets a meter provider (``metrics.set_meter_provider``) they are proxies whose
calls do nothing, and once it does they record through it, even though they were made
before it (the API's proxy meter binds them then). So outside Ray any OpenTelemetry
SDK reader or exporter works; in the Ray runtime each process installs a provider that
forwards every instrument to Ray's own metrics, under the same name.

Names are given in their Prometheus form, units in the name (`_total` on counters,
`_seconds`, `_ratio`), and used verbatim as the OpenTelemetry instrument names (units
``1`` and ``s``). The Ray bridge keeps a name as it is; the OpenTelemetry Prometheus
exporter (opentelemetry-exporter-prometheus 0.66b2, tested) renders these names as
they are too: it adds neither a second ``_total`` nor a unit suffix already present.

Labels stay bounded: never an installation, a repository or a delivery. `method` is
one of the HTTP methods below (others are ``OTHER``), `event` a webhook event GitHub
documents (others are ``other``), `resource` a rate-limit resource GitHub's REST
description names (others are ``other``); every other label takes a fixed set of
values.

Gauges are observed when a reader collects, never per request:

- `ghbot_rate_limit_remaining_ratio{resource}`: the lowest `remaining / limit` any
  answer (of any installation, in this process) reported for the resource in its
  current window; `ghbot_rate_limit_reset_seconds{resource}`: the seconds until that
  window resets. A lower ratio replaces the one held, and so does any answer once the
  held window is over; a resource whose window is over and no answer has reported
  since has no point. One value per resource, never per installation: how close the
  most used installation came to its limit, and when it gets its budget back.
- `ghbot_pending_deliveries`: deliveries journaled and not yet completed, summed over
  the installations active in this process's shards (`watch_pending`).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

__all__ = [
    "LABELS",
    "api_request",
    "meter",
    "parse_error",
    "rate_limit_seen",
    "retry",
    "watch_pending",
    "webhook_received",
    "webhook_unavailable",
]

#: ghbot's meter; a proxy until the application sets a meter provider.
meter: Final = metrics.get_meter("ghbot")

#: Seconds: GitHub answers in tens of milliseconds to seconds; handlers may take minutes.
_API_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Seconds: a batch's journal commit (an fsync, or a PostgreSQL round trip and commit).
_COMMIT_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_WEBHOOK_BUCKETS: Final = (
    *(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    *(30.0, 60.0, 300.0, 900.0, 3600.0),
)

jwt_generated: Final = meter.create_counter(
    "ghbot_jwt_generated_total", unit="1", description="JWTs signed for the app"
)
jwt_failures: Final = meter.create_counter(
    "ghbot_jwt_failures_total", unit="1", description="JWTs that could not be made or were refused"
)
token_requests: Final = meter.create_counter(
    "ghbot_token_requests_total", unit="1", description="installation token exchanges"
)
token_request_duration: Final = meter.create_histogram(
    "ghbot_token_request_duration_seconds",
    unit="s",
    description="time of one installation token exchange, retries included",
    explicit_bucket_boundaries_advisory=_API_BUCKETS,
)
token_cache_lookups: Final = meter.create_counter(
    "ghbot_token_cache_lookups_total", unit="1", description="installation token cache lookups"
)
token_refreshes: Final = meter.create_counter(
    "ghbot_token_refreshes_total", unit="1", description="cached installation tokens replaced"
)
auth_failures: Final = meter.create_counter(
    "ghbot_auth_failures_total", unit="1", description="401 answers and unusable keys"
)
api_requests: Final = meter.create_counter(
    "ghbot_api_requests_total", unit="1", description="HTTP exchanges with GitHub"
)
api_request_duration: Final = meter.create_histogram(
    "ghbot_api_request_duration_seconds",
    unit="s",
    description="time of one HTTP exchange with GitHub, answer read",
    explicit_bucket_boundaries_advisory=_API_BUCKETS,
)
api_retries: Final = meter.create_counter(
    "ghbot_api_retries_total", unit="1", description="requests sent again"
)
secondary_rate_limits: Final = meter.create_counter(
    "ghbot_secondary_rate_limits_total", unit="1", description="secondary rate limits met"
)
webhooks_received: Final = meter.create_counter(
    "ghbot_webhooks_received_total", unit="1", description="verified webhook deliveries"
)
webhook_processing: Final = meter.create_histogram(
    "ghbot_webhook_processing_seconds",
    unit="s",
    description="from a delivery's receipt to all of its handlers done",
    explicit_bucket_boundaries_advisory=_WEBHOOK_BUCKETS,
)
webhook_signature_failures: Final = meter.create_counter(
    "ghbot_webhook_signature_failures_total", unit="1", description="deliveries refused: signature"
)
webhook_parse_errors: Final = meter.create_counter(
    "ghbot_webhook_parse_errors_total", unit="1", description="deliveries refused: not parsable"
)
shard_call_duration: Final = meter.create_histogram(
    "ghbot_shard_call_duration_seconds",
    unit="s",
    description="ingress: one batch's call to its shard actor, until the shard has journaled it",
    explicit_bucket_boundaries_advisory=_COMMIT_BUCKETS,
)
webhooks_unavailable: Final = meter.create_counter(
    "ghbot_webhooks_unavailable_total",
    unit="1",
    description="deliveries answered 503, not journaled: send again; by why",
)
held_deliveries: Final = meter.create_counter(
    "ghbot_held_deliveries_total",
    unit="1",
    description="ingress: deliveries held for a shard draining or not reached, by how it ended",
)
journal_append_duration: Final = meter.create_histogram(
    "ghbot_journal_append_duration_seconds",
    unit="s",
    description="shard: one journal call carrying a group of appends, until they are durable",
    explicit_bucket_boundaries_advisory=_COMMIT_BUCKETS,
)
dead_letters: Final = meter.create_counter(
    "ghbot_dead_letters_total", unit="1", description="handlers dead-lettered"
)

# --- bounded label values, bound once ---------------------------------------------

JWT_FAILURE_REASONS: Final = ("invalid_key", "sign_error", "clock_skew", "refused")
AUTH_FAILURE_TYPES: Final = (
    "invalid_key",  # the private key does not load
    "expired_token",  # a cached installation token GitHub no longer takes
    "bad_credentials",  # any other refused token or JWT
    "clock_skew",  # a JWT refused for its exp/iat
    "propagation",  # a token minted seconds ago, not yet known everywhere
)
OUTCOMES: Final = ("ok", "error")
#: How a hold ended: its deliveries taken (by the shard or its successor), or
#: answered 503 once the hold was over.
HOLD_OUTCOMES: Final = ("taken", "expired")
#: Why a delivery was answered 503: the call to its shard failed (not reached,
#: raising, its journal failing), the shard draining (past the ingress's hold), or the
#: shard refusing it (fenced by a newer one, or not its own).
UNAVAILABLE_REASONS: Final = ("shard_failed", "draining", "refused")
RETRY_REASONS: Final = ("network", "server_error", "rate_limit", "secondary_rate_limit", "auth")
PARSE_ERROR_REASONS: Final = ("too_large", "content_type", "missing_header", "malformed", "other")
METHODS: Final = ("GET", "POST", "PATCH", "PUT", "DELETE", "HEAD", "OPTIONS", "OTHER")
STATUS_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", "network")

#: Every label each metric may carry (the test of bounded labels checks against it).
LABELS: Final[Mapping[str, frozenset[str]]] = {
    "ghbot_jwt_generated_total": frozenset(),
    "ghbot_jwt_failures_total": frozenset({"reason"}),
    "ghbot_token_requests_total": frozenset({"outcome"}),
    "ghbot_token_request_duration_seconds": frozenset(),
    "ghbot_token_cache_lookups_total": frozenset({"result"}),
    "ghbot_token_refreshes_total": frozenset({"kind"}),
    "ghbot_auth_failures_total": frozenset({"type"}),
    "ghbot_api_requests_total": frozenset({"method", "status_class"}),
    "ghbot_api_request_duration_seconds": frozenset({"method"}),
    "ghbot_rate_limit_remaining_ratio": frozenset({"resource"}),
    "ghbot_rate_limit_reset_seconds": frozenset({"resource"}),
    "ghbot_api_retries_total": frozenset({"reason"}),
    "ghbot_secondary_rate_limits_total": frozenset(),
    "ghbot_webhooks_received_total": frozenset({"event"}),
    "ghbot_webhook_processing_seconds": frozenset({"event"}),
    "ghbot_webhook_signature_failures_total": frozenset(),
    "ghbot_webhook_parse_errors_total": frozenset({"reason"}),
    "ghbot_shard_call_duration_seconds": frozenset({"outcome"}),
    "ghbot_webhooks_unavailable_total": frozenset({"reason"}),
    "ghbot_held_deliveries_total": frozenset({"outcome"}),
    "ghbot_journal_append_duration_seconds": frozenset({"outcome"}),
    "ghbot_dead_letters_total": frozenset(),
    "ghbot_pending_deliveries": frozenset(),
}


def _bound(key: str, values: Iterable[str]) -> dict[str, Mapping[str, str]]:
    return {value: {key: value} for value in values}


JWT_FAILURE: Final = _bound("reason", JWT_FAILURE_REASONS)
AUTH_FAILURE: Final = _bound("type", AUTH_FAILURE_TYPES)
RETRY: Final = _bound("reason", RETRY_REASONS)
PARSE_ERROR: Final = _bound("reason", PARSE_ERROR_REASONS)
TOKEN_OK: Final[Mapping[str, str]] = {"outcome": "ok"}
TOKEN_ERROR: Final[Mapping[str, str]] = {"outcome": "error"}
_OUTCOME: Final[Mapping[bool, Mapping[str, str]]] = {True: TOKEN_OK, False: TOKEN_ERROR}
CACHE_HIT: Final[Mapping[str, str]] = {"result": "hit"}
CACHE_MISS: Final[Mapping[str, str]] = {"result": "miss"}
PROACTIVE: Final[Mapping[str, str]] = {"kind": "proactive"}
REACTIVE: Final[Mapping[str, str]] = {"kind": "reactive"}

_METHOD: Final = _bound("method", METHODS)
_API: Final = {
    (method, status_class): {"method": method, "status_class": status_class}
    for method in METHODS
    for status_class in STATUS_CLASSES
}
_STATUS_CLASS: Final = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")


def api_request(method: str, status: int | None, seconds: float) -> None:
    """Count one HTTP exchange (`status` None: no answer came) and record its time."""
    if method not in _METHOD:
        method = "OTHER"
    status_class = "network" if status is None else _STATUS_CLASS[min(max(status // 100, 1), 5)]
    api_requests.add(1, _API[method, status_class])
    api_request_duration.record(seconds, _METHOD[method])


def shard_call(ok: bool, seconds: float) -> None:
    """Record one batch's call from the ingress to its shard (`outcome` ok or error)."""
    shard_call_duration.record(seconds, _OUTCOME[ok])


_HOLD_OUTCOME: Final = _bound("outcome", HOLD_OUTCOMES)


def held(outcome: str, deliveries: int) -> None:
    """Count deliveries the ingress held for a shard draining or not reached, by how
    the hold ended (`HOLD_OUTCOMES`)."""
    held_deliveries.add(deliveries, _HOLD_OUTCOME[outcome])


_UNAVAILABLE: Final = _bound("reason", UNAVAILABLE_REASONS)


def webhook_unavailable(reason: str) -> None:
    """Count a delivery answered 503; `reason` is one of `UNAVAILABLE_REASONS`."""
    webhooks_unavailable.add(1, _UNAVAILABLE[reason])


def journal_append(ok: bool, seconds: float) -> None:
    """Record one journal call of a shard's append group (`outcome` ok or error)."""
    journal_append_duration.record(seconds, _OUTCOME[ok])


def retry(reason: str) -> None:
    """Count a request sent again; `reason` is one of `RETRY_REASONS`."""
    api_retries.add(1, RETRY[reason])


def parse_error(exc: BaseException) -> None:
    """Count a refused delivery: by signature, or by what made it unparsable."""
    name = type(exc).__name__
    if name == "InvalidSignature":
        webhook_signature_failures.add(1)
        return
    webhook_parse_errors.add(1, PARSE_ERROR[_PARSE_REASON.get(name, "other")])


_PARSE_REASON: Final = {
    "PayloadTooLarge": "too_large",
    "UnsupportedContentType": "content_type",
    "MissingHeader": "missing_header",
    "MalformedPayload": "malformed",
}

_EVENTS: dict[str, Mapping[str, str]] = {}


def event_label(event: str) -> Mapping[str, str]:
    """Return the bound `{"event": …}` of a webhook event name (``other`` if not GitHub's)."""
    bound = _EVENTS.get(event)
    if bound is None:
        from ghbot.models import KNOWN_EVENTS

        if not _EVENTS:
            _EVENTS.update(_bound("event", [*KNOWN_EVENTS, "other"]))
        bound = _EVENTS.get(event) or _EVENTS["other"]
    return bound


def webhook_received(event: str) -> None:
    """Count a verified delivery of `event` (the bare name, `issues`)."""
    webhooks_received.add(1, event_label(event))


# --- gauges, observed at collection -----------------------------------------------

#: resource → (the lowest remaining/limit seen in its window, when that window resets).
_lowest: dict[str, tuple[float, float]] = {}
_RESOURCES: dict[str, Mapping[str, str]] = {}

#: The rate-limit resources GitHub's REST description names (`rate-limit-overview`'s
#: `resources`); an answer's `x-ratelimit-resource` outside them is counted as
#: ``other``, so a server or proxy sending anything cannot grow the label's values.
RATE_LIMIT_RESOURCES: Final = frozenset(
    {
        "core",
        "search",
        "graphql",
        "code_search",
        "source_import",
        "integration_manifest",
        "actions_runner_registration",
        "scim",
        "dependency_snapshots",
        "dependency_sbom",
        "code_scanning_autofix",
        "copilot_usage_records",
    }
)


def rate_limit_seen(resource: str, remaining: int, limit: int, reset: float, now: float) -> None:
    """Note one answer's rate-limit headers (`reset` and `now` in epoch seconds)."""
    if limit <= 0:
        return
    if resource not in RATE_LIMIT_RESOURCES:
        resource = "other"
    ratio = remaining / limit
    seen = _lowest.get(resource)
    if seen is None or ratio < seen[0] or seen[1] <= now:
        _lowest[resource] = (ratio, reset)


def _live(now: float) -> list[tuple[Mapping[str, str], float, float]]:
    """Return each resource's label, lowest ratio and reset, dropping windows now over."""
    live = []
    for resource, (ratio, reset) in list(_lowest.items()):
        if reset <= now:
            _lowest.pop(resource, None)
            continue
        label = _RESOURCES.get(resource)
        if label is None:
            label = _RESOURCES[resource] = {"resource": resource}
        live.append((label, ratio, reset))
    return live


def _ratio_callback(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(ratio, label) for label, ratio, _ in _live(time.time())]


def _reset_callback(options: CallbackOptions) -> Iterable[Observation]:
    now = time.time()
    return [Observation(reset - now, label) for label, _, reset in _live(now)]


meter.create_observable_gauge(
    "ghbot_rate_limit_remaining_ratio",
    callbacks=[_ratio_callback],
    unit="1",
    description="lowest remaining/limit answered in the resource's current window",
)
meter.create_observable_gauge(
    "ghbot_rate_limit_reset_seconds",
    callbacks=[_reset_callback],
    unit="s",
    description="seconds until the window of the lowest remaining ratio resets",
)

#: Each shard's count of pending deliveries, held weakly (a closed shard drops out).
_pending: weakref.WeakSet[PendingSource] = weakref.WeakSet()


class PendingSource:
    """Something whose pending deliveries count: `count()` returns how many."""

    __slots__ = ("__weakref__", "count")

    def __init__(self, count: Callable[[], int]) -> None:
        self.count = count


def watch_pending(count: Callable[[], int]) -> PendingSource:
    """Add `count()` to `ghbot_pending_deliveries` while the returned object lives."""
    source = PendingSource(count)
    _pending.add(source)
    return source


def _pending_callback(options: CallbackOptions) -> Iterable[Observation]:
    sources = list(_pending)
    if not sources:
        return []
    return [Observation(sum(source.count() for source in sources))]


meter.create_observable_gauge(
    "ghbot_pending_deliveries",
    callbacks=[_pending_callback],
    unit="1",
    description="deliveries journaled and not yet completed, in active installations",
)
