"""The Prometheus rules of deploy/prometheus: valid, tested with promtool, and as documented.

`promtool check rules` and `promtool test rules ghbot-alerts.test.yml` (which makes
every alert fire on some series and stay quiet on others) run when promtool is on the
PATH (Debian's `prometheus` package; `.ci/run` installs it). Without it these tests
skip locally, and fail under CI (`CI` set) or with `GHBOT_REQUIRE_PROMTOOL=1`, so
CI never passes by skipping them. The rest (thresholds, runbooks, metric names, the
label values the rules, alerts and dashboard filter on, docs/operations.md's metric
table) needs only Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from ghbot import metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "ghbot-rules.yml"
ALERTS = PROMETHEUS / "ghbot-alerts.yml"
RULE_TESTS = PROMETHEUS / "ghbot-alerts.test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "ghbot.json"

#: ghbot's metrics (docs/operations.md's table) and their labels.
METRICS: dict[str, frozenset[str]] = {
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
HISTOGRAMS = ("ghbot_api_request_duration_seconds", "ghbot_webhook_processing_seconds")

#: The operations document's thresholds: alert -> (recorded series, comparison, for).
THRESHOLDS: dict[str, tuple[str, str, str | None]] = {
    "GhbotAuthFailureRateHigh": ("ghbot:auth_failure_ratio:rate5m", "> 0.05", "5m"),
    "GhbotTokenCacheHitRateLow": ("ghbot:token_cache_hit_ratio:rate5m", "< 0.80", "15m"),
    "GhbotJwtGenerationFailing": ("ghbot:jwt_failures:increase5m", "> 0", None),
    "GhbotRateLimitLow": ("ghbot:rate_limit_remaining_ratio:min", "<= 0.10", "5m"),
    "GhbotApiErrorRateHigh": ("ghbot:api_error_ratio:rate5m", "> 0.02", "5m"),
    "GhbotApiLatencyHigh": ("ghbot:api_request_duration_seconds:p95", "> 5", "10m"),
    "GhbotSecondaryRateLimited": ("ghbot:secondary_rate_limits:increase5m", "> 0", None),
    "GhbotWebhookSignatureFailures": ("ghbot:webhook_signature_failures:increase5m", "> 0", None),
    "GhbotProcessingLatencyHigh": ("ghbot:webhook_processing_seconds:p95", "> 30", "10m"),
    "GhbotParseErrorRateHigh": ("ghbot:webhook_parse_error_ratio:rate5m", "> 0.01", "10m"),
    "GhbotHeldDeliveriesExpired": (
        'ghbot:held_deliveries:increase5m{outcome="expired"}',
        "> 0",
        None,
    ),
    "GhbotJournalFailing": ('ghbot:journal_appends:increase5m{outcome="error"}', "> 0", None),
    "GhbotShardCallsFailing": ('ghbot:shard_calls:increase5m{outcome="error"}', "> 0", None),
    "GhbotDeadLetters": ("ghbot:dead_letters:increase5m", "> 0", None),
}

#: A raw metric in a rule: `{__name__=~"(ray_)?NAME"}`, both spellings at once.
_SELECTOR = re.compile(r'\{__name__=~"\(ray_\)\?(ghbot_[a-z_]+)"\}')


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in _load(path)["groups"] for rule in group["rules"]]


def recorded_names() -> set[str]:
    """The series ghbot-rules.yml records (what the alerts and the dashboard may use)."""
    return {rule["record"] for rule in _rules(RULES)}


def _github_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, - for space."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors() -> set[str]:
    return {
        _github_anchor(line.lstrip("#"))
        for line in OPERATIONS.read_text().splitlines()
        if line.startswith("#")
    }


# --- promtool -------------------------------------------------------------------------


def promtool() -> str:
    """The path of promtool; skip without it, unless CI or GHBOT_REQUIRE_PROMTOOL=1 want it."""
    path = shutil.which("promtool")
    if path is not None:
        return path
    reason = "promtool is not installed (apt-get install prometheus)"
    if os.environ.get("CI") or os.environ.get("GHBOT_REQUIRE_PROMTOOL") == "1":
        pytest.fail(f"{reason}, and CI or GHBOT_REQUIRE_PROMTOOL=1 requires it")
    pytest.skip(reason)


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_promtool_accepts_the_rule_files() -> None:
    done = run_promtool("check", "rules", RULES.name, ALERTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = run_promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_accepts_the_example_configuration() -> None:
    done = run_promtool("check", "config", "--syntax-only", CONFIG.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_fails_a_rule_test_that_expects_the_wrong_thing(tmp_path: Path) -> None:
    """The unit tests can fail: an alert expected quiet where it fires is reported."""
    for path in (RULES, ALERTS):
        shutil.copy(path, tmp_path / path.name)
    text = RULE_TESTS.read_text().replace(
        "alertname: GhbotRateLimitLow\n        exp_alerts:\n          - exp_labels:",
        "alertname: GhbotRateLimitLow\n        exp_alerts:\n          - exp_labels: {nope: x}\n"
        "          - exp_labels:",
    )
    assert text != RULE_TESTS.read_text()
    (tmp_path / RULE_TESTS.name).write_text(text)
    done = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "GhbotRateLimitLow" in done.stdout + done.stderr


def test_missing_promtool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("GHBOT_REQUIRE_PROMTOOL", "1")
    with pytest.raises(pytest.fail.Exception, match="requires it"):
        promtool()
    monkeypatch.delenv("GHBOT_REQUIRE_PROMTOOL")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        promtool()


# --- What the rules say -----------------------------------------------------------------


def test_every_alert_has_the_documented_threshold_and_duration() -> None:
    alerts = {rule["alert"]: rule for rule in _rules(ALERTS)}
    assert set(alerts) == set(THRESHOLDS)
    for name, (series, comparison, duration) in THRESHOLDS.items():
        rule = alerts[name]
        assert " ".join(rule["expr"].split()) == f"{series} {comparison}", name
        assert rule.get("for") == duration, name


def test_every_alert_has_a_summary_a_severity_and_a_runbook_in_the_operations_doc() -> None:
    anchors = _anchors()
    for rule in _rules(ALERTS):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"].strip(), name
        url = rule["annotations"]["runbook_url"]
        assert url == f"docs/operations.md#{name.lower()}", name
        assert url.split("#")[1] in anchors, f"{name}: no section {url} in docs/operations.md"


def test_the_rate_limit_alert_holds_at_the_margin_ghbot_spends_down_to() -> None:
    """docs/operations.md, GhbotRateLimitLow: ghbot spends a window down to
    `RATE_LIMIT_MARGIN` (default 0.1) of its limit and no further, so GitHub's remaining
    stops at the margin, the lowest ratio a process reports: the alert must hold there
    (it did not with `< 0.10`)."""
    from ghbot.budget import DEFAULT_MARGIN, Budget
    from ghbot.errors import RateLimited

    (rule,) = [rule for rule in _rules(ALERTS) if rule["alert"] == "GhbotRateLimitLow"]
    _, comparison, level = rule["expr"].split()
    holds = {"<": float.__lt__, "<=": float.__le__}[comparison]
    for limit in (5000, 5050, 12500, 15000):  # GitHub's installation limits (multiples of 50)
        budget = Budget(limit=limit)
        assert budget.margin == DEFAULT_MARGIN == 0.1
        spent = 0
        while True:
            try:
                budget.acquire(0.0)
            except RateLimited:
                break
            spent += 1
        assert budget.remaining == limit - spent == limit // 10
        assert holds(budget.remaining / limit, float(level)), (limit, comparison, level)
        # and it does not hold with more left than the margin: 20 %
        assert not holds(2 * budget.remaining / limit, float(level)), (limit, level)


def test_alerts_use_only_recorded_series() -> None:
    recorded = recorded_names()
    for rule in _rules(ALERTS):
        names = set(re.findall(r"ghbot[a-z0-9_:]*", rule["expr"]))
        assert names and names <= recorded, rule["alert"]


def test_the_rules_read_every_metric_in_both_spellings_and_only_known_labels() -> None:
    seen: set[str] = set()
    for rule in _rules(RULES):
        expr = rule["expr"]
        # Every raw metric is selected as (ray_)?NAME, never one spelling alone.
        bare = re.findall(r"(?<![\w(?])(?:ray_)?ghbot_[a-z_]+", _SELECTOR.sub("", expr))
        assert not bare, f"{rule['record']}: {bare}"
        for name in _SELECTOR.findall(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name) if "_seconds_" in name else name
            assert base in METRICS, f"{rule['record']}: unknown metric {name}"
            seen.add(base)
            for labels in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
                used = {label.strip() for label in labels.split(",") if label.strip()}
                extra = used - METRICS[base] - {"job", "le"}
                assert not extra, f"{rule['record']}: {name} has no label {extra}"
    assert seen == set(METRICS)


def test_the_metric_table_is_ghbots() -> None:
    """The table above (and the rules) name what ghbot.metrics exports, labels included."""
    assert {name: frozenset(keys) for name, keys in metrics.LABELS.items()} == METRICS


def test_the_rule_tests_cover_every_alert_both_ways_and_both_spellings() -> None:
    tests = _load(RULE_TESTS)["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    series = [s["series"] for test in tests for s in test.get("input_series", [])]
    for test in tests:
        for case in test.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert firing == set(THRESHOLDS)
    assert quiet == set(THRESHOLDS)
    assert any(s.startswith("ray_ghbot_") and "WorkerId" in s for s in series)
    assert any(s.startswith("ghbot_") for s in series)
    for name in THRESHOLDS:
        assert RULE_TESTS.read_text().count(f"docs/operations.md#{name.lower()}") >= 1


# --- The label values the rules, alerts and dashboard filter on -------------------------

#: A series' name (raw, either spelling, or recorded) and its braces; or braces alone.
_BRACES = re.compile(r"((?:ray_)?ghbot[a-z0-9_:]*)?\{([^{}]*)\}")
#: One matcher inside braces: `label="v"`, `label!="v"`, `label=~"a|b"`, `label!~"a|b"`,
#: the value in double quotes, single quotes or backticks, as PromQL takes it.
_MATCHER = re.compile(r"""(\w+)\s*(=~|!~|!=|=)\s*(?:"([^"]*)"|'([^']*)'|`([^`]*)`)""")
#: Labels that are not ghbot's: the scrape's, the histogram's, the name itself.
_NOT_GHBOTS = {"job", "le", "__name__"}


def _dashboard_exprs() -> Iterator[str]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[str]:
        for panel in panels:
            yield from walk(panel.get("panels", []))
            yield from (target["expr"] for target in panel.get("targets", []))

    yield from walk(json.loads(DASHBOARD.read_text())["panels"])


def _filtering_exprs() -> Iterator[tuple[str, str]]:
    """Every PromQL expression that may filter on a label value: (where, expression)."""
    for rule in _rules(RULES):
        yield f"{RULES.name}: {rule['record']}", rule["expr"]
    for rule in _rules(ALERTS):
        yield f"{ALERTS.name}: {rule['alert']}", rule["expr"]
    for expr in _dashboard_exprs():
        yield DASHBOARD.name, expr


def _base(name: str) -> str:
    """A raw series' metric: `ray_` and a histogram's `_bucket`/`_sum`/`_count` dropped."""
    name = name.removeprefix("ray_")
    return re.sub(r"_(bucket|sum|count)$", "", name) if "_seconds_" in name else name


def _sources(name: str) -> set[str]:
    """The ghbot metrics a raw or recorded series is made of (recorded ones followed)."""
    if ":" not in name:
        return {_base(name)}
    (rule,) = [rule for rule in _rules(RULES) if rule["record"] == name]
    found = {_base(raw) for raw in _SELECTOR.findall(rule["expr"])}
    for used in set(re.findall(r"ghbot:[a-z0-9_:]+", rule["expr"])) - {name}:
        found |= _sources(used)
    return found


def _emitted() -> dict[str, dict[str, frozenset[str]]]:
    """Each metric's labels and every value ghbot records them with: the bound label
    sets of ghbot/metrics.py that its instruments are given (`resource`: the resources
    GitHub names, and the `other` that `rate_limit_seen` makes of the rest)."""
    from ghbot.models import KNOWN_EVENTS

    def values(bound: Iterable[Mapping[str, str]]) -> dict[str, frozenset[str]]:
        found: dict[str, set[str]] = {}
        for labels in bound:
            for key, value in labels.items():
                found.setdefault(key, set()).add(value)
        return {key: frozenset(found[key]) for key in found}

    events = values(metrics.event_label(e) for e in [*KNOWN_EVENTS, "other"])
    resources = {"resource": frozenset({*metrics.RATE_LIMIT_RESOURCES, "other"})}
    outcome = values(metrics._OUTCOME.values())
    return {
        "ghbot_jwt_failures_total": values(metrics.JWT_FAILURE.values()),
        "ghbot_token_requests_total": values([metrics.TOKEN_OK, metrics.TOKEN_ERROR]),
        "ghbot_token_cache_lookups_total": values([metrics.CACHE_HIT, metrics.CACHE_MISS]),
        "ghbot_token_refreshes_total": values([metrics.PROACTIVE, metrics.REACTIVE]),
        "ghbot_auth_failures_total": values(metrics.AUTH_FAILURE.values()),
        "ghbot_api_requests_total": values(metrics._API.values()),
        "ghbot_api_request_duration_seconds": values(metrics._METHOD.values()),
        "ghbot_rate_limit_remaining_ratio": resources,
        "ghbot_rate_limit_reset_seconds": resources,
        "ghbot_api_retries_total": values(metrics.RETRY.values()),
        "ghbot_webhooks_received_total": events,
        "ghbot_webhook_processing_seconds": events,
        "ghbot_webhook_parse_errors_total": values(metrics.PARSE_ERROR.values()),
        "ghbot_shard_call_duration_seconds": outcome,
        "ghbot_webhooks_unavailable_total": values(metrics._UNAVAILABLE.values()),
        "ghbot_held_deliveries_total": values(metrics._HOLD_OUTCOME.values()),
        "ghbot_journal_append_duration_seconds": outcome,
    }


def _value_filters() -> Iterator[tuple[str, set[str], str, str, str]]:
    """Each matcher on a ghbot label: (where, metrics, label, operator, value)."""
    for where, expr in _filtering_exprs():
        for name, braces in _BRACES.findall(expr):
            matchers = [(m[0], m[1], "".join(m[2:])) for m in _MATCHER.findall(braces)]
            if not name:
                named = [v for label, _, v in matchers if label == "__name__"]
                if not named:
                    continue
                name = named[0].removeprefix("(ray_)?")
            sources = _sources(name)
            for label, operator, value in matchers:
                if label not in _NOT_GHBOTS:
                    yield where, sources, label, operator, value


def _unknown_values(emitted: Mapping[str, Mapping[str, frozenset[str]]]) -> list[str]:
    unknown = []
    for where, sources, label, operator, value in _value_filters():
        can = frozenset().union(*(emitted.get(m, {}).get(label, frozenset()) for m in sources))
        if operator in {"=~", "!~"}:
            assert re.fullmatch(r"[\w]+(\|[\w]+)*", value), f"{where}: {value!r} is not a|b"
            wanted = set(value.split("|"))
        else:
            wanted = {value}
        if not wanted <= can:
            unknown.append(f"{where}: {label}{operator}{value!r} ({sorted(wanted - can)})")
    return unknown


def test_every_label_value_the_rules_alerts_and_dashboard_filter_on_is_one_ghbot_records() -> None:
    """Renaming a label value in ghbot/metrics.py (`propagation`, `expired`, `hit`,
    `5xx`, ...) would otherwise change an alert silently: `type!="propagation"` matching
    everything, `outcome="expired"` nothing."""
    filters = list(_value_filters())
    seen = {(label, value) for _, _, label, _, value in filters}
    # The matchers this reads (so a change to the extraction that finds none fails).
    assert {
        ("type", "propagation"),
        ("result", "hit"),
        ("status_class", "5xx|network"),
        ("outcome", "expired"),
        ("outcome", "error"),
    } <= seen
    assert _unknown_values(_emitted()) == []


def test_a_label_value_ghbot_no_longer_records_is_caught() -> None:
    emitted = _emitted()
    renamed = {
        **emitted,
        "ghbot_auth_failures_total": {
            "type": emitted["ghbot_auth_failures_total"]["type"] - {"propagation"}
        },
    }
    assert (
        _unknown_values(renamed)
        == [f"{RULES.name}: ghbot:auth_failure_ratio:rate5m: type!='propagation' (['propagation'])"]
        * 2
    )


def _metric_table() -> dict[str, tuple[str, dict[str, frozenset[str] | None]]]:
    """docs/operations.md's metric table: metric -> (type, label -> values listed or None)."""
    lines = OPERATIONS.read_text().split("\n## Metrics\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| `"))
    table: dict[str, tuple[str, dict[str, frozenset[str] | None]]] = {}
    for line in lines[start:]:
        if not line.startswith("| `"):
            break
        name, kind, labels = (cell.strip() for cell in line.strip("|").split("|"))
        found: dict[str, frozenset[str] | None] = {}
        for label, listed in re.findall(r"`(\w+)`(?: \(([^)]*)\))?", labels):
            found[label] = frozenset(re.findall(r"`([^`]+)`", listed)) if listed else None
        table[name.strip("`")] = (kind, found)
    return table


def test_the_operations_docs_metric_table_is_what_ghbot_records() -> None:
    """Its names, types and labels are ghbot/metrics.py's, and each value it lists is
    every value ghbot records the label with."""
    table = _metric_table()
    assert {name: frozenset(labels) for name, (_, labels) in table.items()} == {
        name: frozenset(keys) for name, keys in metrics.LABELS.items()
    }
    # Every instrument the module's meter made, observable gauges too (no module name).
    kinds = {
        "_ProxyCounter": "counter",
        "_ProxyHistogram": "histogram",
        "_ProxyObservableGauge": "gauge",
    }
    made = {
        instrument._name: kinds.get(type(instrument).__name__, type(instrument).__name__)
        for instrument in vars(metrics.meter)["_instruments"]
    }
    emitted = _emitted()
    for name, (kind, labels) in table.items():
        assert name in made, f"docs/operations.md lists {name}, which ghbot.metrics lacks"
        assert kind == made[name], name
        for label, listed in labels.items():
            if listed is not None:
                assert listed == emitted[name][label], (name, label)
