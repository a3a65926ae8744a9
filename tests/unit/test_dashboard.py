"""deploy/grafana/ghbot.json: an importable dashboard over series that exist.

Every panel's queries may name only the series ghbot-rules.yml records (or, failing
that, ghbot's metrics themselves), so renaming a metric or a recorded series without
the dashboard breaks a test. With promtool on the PATH, every query is also parsed as
PromQL (as a recording rule given to `promtool check rules`).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from test_alert_rules import HISTOGRAMS, METRICS, promtool, recorded_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ghbot.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def _dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels() for t in p["targets"]]


def test_it_is_an_importable_dashboard_with_a_prometheus_input() -> None:
    data = _dashboard()
    assert data["schemaVersion"] >= 36
    assert data["uid"] == "ghbot" and data["title"] == "ghbot"
    assert data["id"] is None
    (source,) = data["__inputs"]
    assert source["name"] == "DS_PROMETHEUS" and source["pluginId"] == "prometheus"
    for variable in data["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE


def test_every_panel_queries_the_prometheus_input() -> None:
    ids = [p["id"] for p in _dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_the_panels_the_issue_asks_for_are_there() -> None:
    titles = " | ".join(p["title"].lower() for p in _panels())
    for words in (
        "webhooks received per second, by event",
        "processing time (p50, p95)",
        "api latency p95",
        "api error ratio",
        "by status class",
        "rate limit remaining, by resource",
        "token cache hit ratio",
        "dead letters",
        "pending deliveries",
        "secondary rate limits",
        "refused deliveries",
        "held deliveries",  # for a shard draining or not reached (docs/operations.md)
    ):
        assert words in titles, words
    exprs = " ".join(expr for _, expr in _exprs())
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.95," in exprs
    assert "ghbot:webhook_signature_failures:increase5m" in exprs


def _balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quoted = False
    for char in expr:
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack and not quoted


def test_every_query_is_non_empty_balanced_and_filtered_by_job() -> None:
    for title, expr in _exprs():
        assert expr.strip(), title
        assert _balanced(expr), f"{title}: {expr}"
        assert re.search(r'\{job=~"\$job"[,}]', expr), f"{title}: {expr}"


def test_every_query_names_only_recorded_series_or_ghbots_metrics() -> None:
    known = recorded_names() | set(METRICS)
    known |= {f"{h}_{part}" for h in HISTOGRAMS for part in ("bucket", "sum", "count")}
    for title, expr in _exprs():
        names = set(re.findall(r"(?:ray_)?ghbot[a-zA-Z0-9_:]*", expr))
        assert names, f"{title}: {expr}"
        unknown = {re.sub(r"^ray_", "", n) for n in names} - known
        assert not unknown, f"{title}: {unknown}"


def test_a_renamed_series_would_be_caught() -> None:
    """The name check above is not vacuous: a name the rules do not record fails it."""
    known = recorded_names()
    assert "ghbot:webhooks_received:rate5m" in known
    assert "ghbot:webhooks_received:rate1m" not in known


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": expr.replace("$job", ".*")}
        for i, (_, expr) in enumerate(_exprs())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


_LEVEL = re.compile(r"^(ghbot:[a-z0-9_:]+)(?:\{[^}]*\})?\s*[<>]=?\s*([0-9.]+)$")


def test_a_panel_draws_the_level_its_alert_fires_at() -> None:
    """docs/operations.md: panels whose alert fires above or below a level (a ratio, a
    latency, the rate limit left) draw that level as a line; alerts on any event at
    all (`> 0`) have none to draw."""
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "ghbot-alerts.yml").read_text())
    levels = {}
    for group in alerts["groups"]:
        for rule in group["rules"]:
            found = _LEVEL.match(rule["expr"].strip())
            assert found, rule["alert"]  # one recorded series against a number
            if float(found[2]) != 0:
                levels[rule["alert"]] = (found[1], float(found[2]))
    assert len(levels) == 7
    for alert, (series, level) in levels.items():
        # The panel may chart the series, or what it is recorded from (a p95 from the
        # histogram's buckets): the metric's part of the name, then `_` or `:`.
        metric = re.compile(rf"ghbot:{re.escape(series.split(':')[1])}[_:]")
        drawn = [
            [step["value"] for step in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
            for p in _panels()
            if any(metric.search(t["expr"]) for t in p["targets"])
            and p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"
        ]
        assert any(level in values for values in drawn), (alert, series, level, drawn)


def test_a_panel_of_a_series_an_alert_counts_whole_counts_it_whole_too() -> None:
    """An alert on `ghbot:X:increase5m` counts a series new in the last 5 minutes at its
    full value (a process's first hold, say); a panel of `ghbot:X:rate5m` shows 0 for
    it, so the panel read nothing while the alert fired."""
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "ghbot-alerts.yml").read_text())
    counted = {
        name
        for group in alerts["groups"]
        for rule in group["rules"]
        for name in re.findall(r"ghbot:(\w+):increase5m", rule["expr"])
    }
    assert counted  # the held deliveries' and the signature failures', at least
    for title, expr in _exprs():
        for name in counted:
            assert f"ghbot:{name}:rate5m" not in expr, (title, name)
