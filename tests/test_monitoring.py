"""deploy/: the Prometheus alert rules pass promtool (their syntax and their unit tests), the Grafana
dashboard is one Grafana imports and its queries parse, and every metric either names is one that
GET /metrics exposes, so they cannot drift apart. promtool comes with Debian's `prometheus`
package (scripts/test-deps installs it); without it these tests fail, they do not skip."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, Running

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
METRIC = re.compile(r"\bhandrail_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
# Grafana's variables, as Grafana would put them in before Prometheus sees a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    assert found, "promtool is missing: run scripts/test-deps (it installs Debian's prometheus package)"
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def test_the_alert_rules_pass_promtool() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_the_series_that_should_page_it_and_not_before() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == {rule["alert"] for rule in rules()}, "every alert has a unit test"


def test_every_alert_waits_has_a_severity_and_says_what_to_do() -> None:
    alerts = rules()
    assert {rule["alert"] for rule in alerts} == {
        "HandrailOutboxBehind",
        "HandrailDeadLetters",
        "HandrailSweepLate",
        "HandrailSlackErrors",
        "HandrailSlackRateLimited",
        "HandrailNotReady",
    }
    for rule in alerts:
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), rule
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule


def test_the_dashboard_is_one_grafana_imports_and_its_queries_parse(tmp_path: Path) -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["title"] and board["uid"]
    [variable] = board["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}", panel["title"]
    # promtool parses PromQL in rule files: each query becomes a recording rule.
    recorded = []
    for number, query in enumerate(queries()):
        for variable_name, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable_name, value)
        assert "$" not in query, query
        recorded.append({"record": f"dashboard:query_{number}", "expr": query})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_and_the_rules_name_only_metrics_that_metrics_exposes_and_show_them_all(
    running: Running,
) -> None:
    response = httpx.get(f"{running.url}/metrics", timeout=30)
    assert response.status_code == 200
    exposed = set()
    for family in text_string_to_metric_families(response.text):
        if family.name.startswith("handrail_"):
            exposed |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    in_rules = {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    on_dashboard = {name for query in queries() for name in METRIC.findall(query)}
    assert in_rules - exposed == set()
    assert on_dashboard - exposed == set()
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in exposed}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in on_dashboard}
    assert families - shown == set(), "every metric has a panel"
