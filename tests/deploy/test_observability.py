"""The Grafana dashboard and the Prometheus rules stay true to the code.

* both files are valid (JSON, YAML, the PrometheusRule against deploy/crds);
* every PromQL expression parses with a real parser (promql-parser: functions,
  aggregations, matchers, regexes, range durations, brackets);
* every metric they name is one the services export: the names are read from
  prometheus_client's default registry after importing every module of every service
  package and of libs/common (histograms give ``_bucket``/``_count``/``_sum``, counters
  ``_total``), so renaming a metric in the code fails here; label matchers name labels
  the metric has, and ``le`` matchers name a bucket bound the histogram really has;
* the alerts of the health issue and the SLO burn-rate alerts are all there, each with
  a severity, a summary, a description and a runbook that exists.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.utils import floatToGoString

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "k8s" / "base" / "observability" / "prometheusrule.yaml"
DASHBOARD = ROOT / "deploy" / "observability" / "grafana" / "postd-overview.json"
CHECK = ROOT / "deploy" / "check.py"
PACKAGES = (
    "postd_common",
    "postd_gateway",
    "postd_connectors",
    "postd_vault",
    "postd_publisher",
    "postd_webhook_router",
    "postd_health",
)
# Labels Prometheus adds to every scraped series (the scrape target), and the
# histogram bucket bound.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container"})
# Grafana's variables, replaced by values of the same kind before parsing.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1d",
    "${platform}": ".*",
    "$platform": ".*",
    "${service}": ".*",
    "$service": ".*",
}
HEALTH_ALERTS = {
    # The health issue's list: token refresh failure, API error rate over 5 % per
    # platform, webhook delivery failures over 3 in a row, queue backlog over 1,000, a
    # platform outage.
    "PostdTokenRefreshFailures": "postd_token_refreshes_total",
    "PostdPlatformErrorRateHigh": "> 0.05",
    "PostdWebhookDeliveryFailures": "postd_webhooks_outbound_failure_streaks_total",
    "PostdPublishBacklog": "> 1000",
    "PostdPlatformOutage": "postd_platform_requests_total",
}
SLOS = ("publish_success", "publish_delay", "webhook_acceptance")
ERROR_BUDGET = 0.005  # 99.5 % over 30 days
# (long window, short window, burn factor, severity)
BURN_ALERTS = (
    ("1h", "5m", "14.4", "critical"),
    ("6h", "30m", "6", "critical"),
    ("1d", "2h", "3", "warning"),
    ("3d", "6h", "1", "warning"),
)


# --------------------------------------------------------------------------- exported


@dataclass(frozen=True)
class Exported:
    """A sample name the services export, with its metric's labels and, for a
    histogram's ``_bucket``, the bucket bounds as they appear in ``le``."""

    name: str
    labels: frozenset[str]
    buckets: frozenset[str] = frozenset()


def _modules(package: ModuleType) -> Iterator[str]:
    yield package.__name__
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            yield info.name


@cache
def exported() -> Mapping[str, Exported]:
    """Every sample name in the default registry once every module is imported."""
    for package in PACKAGES:
        for name in _modules(importlib.import_module(package)):
            importlib.import_module(name)
    found: dict[str, Exported] = {}
    # Labels and bucket bounds are only on the collectors themselves.
    collectors = REGISTRY._collector_to_names
    for collector, names in list(collectors.items()):
        labels = frozenset(getattr(collector, "_labelnames", ()))
        bounds = frozenset(floatToGoString(b) for b in getattr(collector, "_upper_bounds", ()))
        for name in names:
            if name.endswith("_bucket"):
                found[name] = Exported(name, labels | {"le"}, bounds)
            else:
                found[name] = Exported(name, labels)
    return found


# --------------------------------------------------------------------------- sources


@cache
def rule_file() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return loaded


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_file()["spec"]["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def recorded() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


@cache
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def grafana_expr(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every rule and every dashboard target."""
    found = [(f"rule {r.get('alert') or r.get('record')}", str(r["expr"])) for r in rules()]
    for panel in panels():
        for target in panel["targets"]:
            found.append((f"panel {panel['title']!r}", grafana_expr(target["expr"])))
    return found


def label_values_metrics() -> list[str]:
    """Metrics named by the dashboard's ``label_values(metric, label)`` variables."""
    names = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"]
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query)
        assert match, f"variable {variable['name']}: {query!r}"
        names.append(match.group(1))
        metric = exported().get(match.group(1))
        assert metric is None or match.group(2) in metric.labels, query
    return names


# --------------------------------------------------------------------------- PromQL


def selectors(expr: str) -> list[tuple[str | None, list[tuple[str, str, str]]]]:
    """(metric name, [(label, op, value)]) of every vector selector in ``expr``;
    raises ValueError when it does not parse."""
    found: list[tuple[str | None, list[tuple[str, str, str]]]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [(m.name, str(m.op), m.value) for m in node.matchers.matchers]
            name = node.name or next((v for k, _, v in matchers if k == "__name__"), None)
            found.append((name, matchers))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def metric_problems(expr: str, known: Mapping[str, Exported], records: set[str]) -> list[str]:
    """What in ``expr`` the services do not export: unknown metric names, labels the
    metric does not have, ``le`` values that are not bucket bounds."""
    problems = []
    for name, matchers in selectors(expr):
        if name is None:
            problems.append("a selector without a metric name")
            continue
        if name in records:
            continue
        metric = known.get(name)
        if metric is None:
            problems.append(f"{name} is not exported by any service")
            continue
        for label, op, value in matchers:
            if label == "__name__":
                continue
            if label not in metric.labels and label not in TARGET_LABELS:
                problems.append(f"{name} has no label {label!r}")
            if label == "le" and op.endswith("Equal") and value not in metric.buckets:
                problems.append(f"{name} has no bucket le={value!r}: {sorted(metric.buckets)}")
    return problems


# --------------------------------------------------------------------------- validity


def test_the_dashboard_is_a_valid_grafana_dashboard() -> None:
    board = dashboard()
    assert board["uid"] == "postd-overview"
    assert board["title"]
    assert board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    assert "datasource" in variables
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0, panel["title"]
        assert grid["y"] >= 0, panel["title"]
    for panel in panels():
        assert panel["targets"], f"{panel['title']}: no query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_dashboard_mirrors_the_health_dashboard() -> None:
    """Issue 8, part 8: token expiries, API performance per platform (success, p50,
    p95), the error distribution, queue health; plus SLOs and RED per service."""
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    for wanted in (
        "Token health",
        "API performance per platform",
        "Error distribution",
        "Queue health",
        "Webhooks",
        "RED per service",
    ):
        assert wanted in rows
    assert any(r.startswith("SLOs") for r in rows)
    text = json.dumps(dashboard())
    for figure in ("expiring_7d", "expiring_24h", "pending", "dlq_size"):
        assert f'figure=\\"{figure}\\"' in text, figure
    for quantile in ("histogram_quantile(0.5,", "histogram_quantile(0.95,"):
        assert quantile in text
    assert 'postd_publish_attempts_total{outcome=\\"published\\"' in text
    assert 'outcome=~\\"failed|dead_lettered\\"' in text
    assert "[24h]" in text
    for slo in SLOS:
        assert f"postd:slo_{slo}:error_ratio_rate30d" in text


def test_the_rules_are_a_valid_prometheus_rule() -> None:
    spec = importlib.util.spec_from_file_location("postd_deploy_check", CHECK)
    assert spec is not None
    assert spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, check)
    spec.loader.exec_module(check)
    obj = rule_file()
    assert check.schema_problems(obj) == []
    # The check catches what it must: an unknown field, a bad duration, an expression
    # that does not parse.
    broken = json.loads(json.dumps(obj))
    first = broken["spec"]["groups"][0]["rules"][0]
    first["exprr"] = first.pop("expr")
    problems = check.schema_problems(broken)
    assert any("exprr" in p for p in problems), problems
    broken = json.loads(json.dumps(obj))
    alert = next(r for g in broken["spec"]["groups"] for r in g["rules"] if "alert" in r)
    alert["for"] = "5 minutes"
    alert["expr"] = "sum(rate(postd_platform_requests_total[5x]))"
    problems = check.schema_problems(broken)
    assert any("5 minutes" in p for p in problems), problems
    assert any("expr" in p and "5x" in p for p in problems), problems


def test_every_expression_parses() -> None:
    found = expressions()
    assert len(found) > 80
    failures = []
    for where, expr in found:
        try:
            promql_parser.parse(expr)
        except ValueError as exc:
            failures.append(f"{where}: {exc}: {expr}")
    assert not failures, "\n".join(failures)


def test_the_parser_refuses_what_it_must() -> None:
    """The parse check is a real one: unknown functions, bad durations, unbalanced
    brackets and bad regexes fail."""
    for bad, why in (
        ("sum(rate(postd_http_requests_total[5m])", "unclosed left parenthesis"),
        ("rate(postd_http_requests_total[5x])", "duration"),
        ("ratee(postd_http_requests_total[5m])", "unknown function"),
        ('postd_http_requests_total{status=~"5(.."}', "illegal regex"),
        ("sum by (platform (rate(postd_http_requests_total[5m]))", "parenthesis"),
        ('postd_http_requests_total{status="5xx"', "braces"),
    ):
        with pytest.raises(ValueError, match=why):
            promql_parser.parse(bad)


# --------------------------------------------------------------------------- metrics


def test_the_services_export_the_metrics_behind_the_dashboard() -> None:
    known = exported()
    for name in (
        # RED: gRPC servers (all services), the gateway's HTTP, Kafka consumers.
        "postd_grpc_server_handled_total",
        "postd_grpc_server_handling_seconds_bucket",
        "postd_http_requests_total",
        "postd_http_request_seconds_bucket",
        "postd_kafka_messages_handled_total",
        "postd_kafka_handler_seconds_bucket",
        # The health dashboard's figures.
        "postd_platform_requests_total",
        "postd_platform_request_seconds_bucket",
        "postd_publish_attempts_total",
        "postd_publish_delay_seconds_bucket",
        "postd_health_queue_jobs",
        "postd_health_token_connections",
        "postd_token_refreshes_total",
        "postd_webhooks_inbound_total",
        "postd_webhooks_outbound_failure_streaks_total",
    ):
        assert name in known, name
    assert {"route", "method", "status"} <= known["postd_http_requests_total"].labels
    assert {"platform", "outcome", "category"} <= known["postd_publish_attempts_total"].labels


def test_every_metric_named_is_one_the_services_export() -> None:
    known = exported()
    records = recorded()
    failures = []
    for where, expr in expressions():
        failures += [f"{where}: {p}" for p in metric_problems(expr, known, records)]
    for name in label_values_metrics():
        if name not in known:
            failures.append(f"dashboard variable: {name} is not exported")
    assert not failures, "\n".join(failures)


def test_a_renamed_metric_or_label_is_caught() -> None:
    known = exported()
    assert metric_problems("sum(rate(postd_platform_request_total[5m]))", known, set()) == [
        "postd_platform_request_total is not exported by any service"
    ]
    assert metric_problems('postd_publish_attempts_total{state="published"}', known, set()) == [
        "postd_publish_attempts_total has no label 'state'"
    ]
    assert metric_problems('postd_publish_delay_seconds_bucket{le="299.0"}', known, set())
    assert not metric_problems('postd_publish_delay_seconds_bucket{le="300.0"}', known, set())
    assert not metric_problems("postd:slo_publish_delay:error_ratio_rate5m", known, recorded())


# --------------------------------------------------------------------------- alerts


def test_the_health_issue_alerts_are_all_there() -> None:
    found = alerts()
    for name, needle in HEALTH_ALERTS.items():
        assert name in found, name
        assert needle in found[name]["expr"], (name, needle)


def test_every_alert_says_what_to_do() -> None:
    found = alerts()
    assert len(found) >= len(HEALTH_ALERTS) + len(SLOS) * len(BURN_ALERTS)
    for name, alert in found.items():
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), name
        notes = alert["annotations"]
        assert notes["summary"], name
        assert notes["description"], name
        runbook = notes["runbook_url"]
        assert re.fullmatch(r"docs/runbooks/[a-z0-9-]+\.md", runbook), (name, runbook)
        assert (ROOT / runbook).is_file(), (name, runbook)
        assert f"]({Path(runbook).name})" in (ROOT / "docs/runbooks/README.md").read_text(), (
            f"{runbook} is not in the runbook index"
        )


def test_each_slo_has_multiwindow_multi_burn_rate_alerts() -> None:
    found = alerts()
    records = recorded()
    for slo in SLOS:
        for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"):
            assert f"postd:slo_{slo}:error_ratio_rate{window}" in records, (slo, window)
        burns = {n: a for n, a in found.items() if a["labels"].get("slo") == slo}
        assert len(burns) == len(BURN_ALERTS), (slo, sorted(burns))
        for long, short, factor, severity in BURN_ALERTS:
            match = [
                a
                for a in burns.values()
                if f"postd:slo_{slo}:error_ratio_rate{long} > ({factor} * {ERROR_BUDGET})"
                in a["expr"]
                and f"postd:slo_{slo}:error_ratio_rate{short} > ({factor} * {ERROR_BUDGET})"
                in a["expr"]
            ]
            assert len(match) == 1, (slo, long, short)
            assert match[0]["labels"]["severity"] == severity
            assert " and" in match[0]["expr"] or "\nand" in match[0]["expr"]


def test_recording_rules_cover_their_whole_window() -> None:
    """Each recording rule's ranges all equal the window its name says."""
    for rule in rules():
        if "record" not in rule:
            continue
        window = rule["record"].rsplit("_rate", 1)[-1]
        ranges = set(re.findall(r"\[(\w+)\]", rule["expr"]))
        assert ranges == {window}, (rule["record"], ranges)


# --------------------------------------------------------------------------- rendered


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_every_overlay_deploys_the_rules_and_the_scrape_config() -> None:
    for env in ("dev", "staging", "prod"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / env)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        objects = [doc for doc in yaml.safe_load_all(out) if doc]
        kinds = {(o["kind"], o["metadata"]["name"]): o for o in objects}
        rule = kinds[("PrometheusRule", "postd")]
        assert rule["spec"] == rule_file()["spec"]
        monitor = kinds[("ServiceMonitor", "postd")]
        selector = monitor["spec"]["selector"]["matchLabels"]
        ports = {e["port"] for e in monitor["spec"]["endpoints"]}
        # The gRPC metrics' own `service` label must win over the target's.
        assert all(e.get("honorLabels") for e in monitor["spec"]["endpoints"])
        scraped = set()
        for obj in objects:
            if obj["kind"] != "Service":
                continue
            labels = obj["metadata"].get("labels", {})
            selected = all(labels.get(k) == v for k, v in selector.items())
            if selected and ports & {p["name"] for p in obj["spec"]["ports"]}:
                scraped.add(obj["metadata"]["name"])
        assert scraped >= {
            "gateway",
            "connectors",
            "vault",
            "publisher",
            "webhook-router",
            "health",
        }, (env, scraped)
