"""docs/grafana-dashboard.json queries only series we export (the provider's, and the CLI's
--metrics-file textfile), with the exact names prometheus_client emits (`_total`, `_bucket`,
...); and it is a dashboard Grafana imports: panels with queries, a data source variable.
docs/metrics.md names every metric of both."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from synapse_objstore import metrics
from synapse_objstore.cli.reconcile import ReconcileSummary
from synapse_objstore.cli.report import Summary
from synapse_objstore.cli.run_metrics import RunRecord, named_counts, registry_of, summary_counts

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
METRICS_MD = ROOT / "docs" / "metrics.md"

# PromQL words that are not metric names: aggregations, operators and modifiers (functions are
# told apart by the parenthesis after them).
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                   "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, legends)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    names = re.findall(r"(?<![\w.:])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr)
    return {name for name in names if name.lower() not in PROMQL_KEYWORDS}


def action_values(expr: str) -> set[str]:
    """The `action` label values an expression matches on (= or =~ with alternatives)."""
    return {value for matched in re.findall(r'action=~?"([^"]*)"', expr) for value in matched.split("|")}


def provider_series() -> dict[str, set[str]]:
    """Every sample name the provider's registry emits, with its label names."""
    metrics.ProviderMetrics("s3", f"dashboard-{uuid.uuid4().hex}")  # so that every labelled series exists
    names: dict[str, set[str]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            for family in metric.collect():
                for sample in family.samples:
                    names.setdefault(sample.name, set()).update(sample.labels)
    return names


def cli_record() -> RunRecord:
    """A run record with every count any command reports."""
    counts = {**summary_counts(Summary("upload")), **summary_counts(ReconcileSummary("reconcile")),
              **named_counts({"synced": 0, "deleted": 0, "returned": 0})}
    return RunRecord("upload", "0/1", 0.0, 1.0, 0, counts=counts, left=0)


def cli_series() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for family in registry_of(cli_record()).collect():
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def queries(board: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            exprs.append(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", query["query"]))
    return exprs


def test_the_extractor_finds_the_metric_names_of_an_expression() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, server_name) (rate(a_bucket{server_name=~"$server_name", '
            'operation="fetch"}[$__rate_interval]))) / on(job) group_left b_total - time() + c offset 5m > bool 0')
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}
    assert metric_names('x{action=~"uploaded|deleted"}') == {"x"} and action_values('x{action=~"a|b"}') == {"a", "b"}


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exported = {**provider_series(), **cli_series()}
    queried = {name for expr in queries(dashboard()) for name in metric_names(expr)}
    assert queried, "no query found"
    unknown = queried - set(exported)
    assert not unknown, f"queried but exported by neither the provider nor the CLI: {unknown}"
    # the dashboard shows every provider metric and every kind of CLI series
    assert {name for name in provider_series() if not name.endswith("_created")} <= queried
    assert {"objstore_offload_last_run_success", "objstore_offload_last_run_end_timestamp_seconds",
            "objstore_offload_last_run_failures", "objstore_offload_last_run_left"} <= queried


def test_every_action_the_dashboard_matches_is_one_the_cli_writes() -> None:
    written = {action for _, action in cli_record().counts}
    matched = {value for expr in queries(dashboard()) for value in action_values(expr)}
    assert matched and not matched - written, f"no such action: {matched - written}"


def test_the_dashboard_is_a_grafana_dashboard_with_a_data_source_variable() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert len(panels) >= 10
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["title"] and panel["targets"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}" and target["refId"] and target["expr"]
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


@pytest.mark.parametrize("names", [provider_series, cli_series], ids=["provider", "cli"])
def test_docs_name_every_metric_as_scraped(names: Any) -> None:
    documented = set(re.findall(r"`([a-z_:]+)`", METRICS_MD.read_text()))
    families = {re.sub(r"_(bucket|sum|count|created)$", "", name) for name in names()}
    # a counter is documented by its `_total` name, a histogram by its own (for its _bucket, _sum and _count)
    missing = {name for name in families if name not in documented and f"{name}_total" not in documented}
    assert not missing, f"not in docs/metrics.md: {sorted(missing)}"


def test_every_cli_series_a_panel_shows_has_a_legend_of_its_own() -> None:
    """Each series of a CLI panel is one run of one command and shard on one host (node_exporter's
    `instance`: media workers with disks of their own each offload theirs, all as `upload 0/1`):
    a legend that leaves out a label the query does not pin shows several series under one name,
    and the operator cannot tell which run failed."""
    labelled = cli_series()
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            names = [name for name in metric_names(target["expr"]) if name.startswith("objstore_offload_")]
            if not names:
                continue
            pinned = set(re.findall(r'(\w+)="[^"|]*"', target["expr"]))
            varying = ({"instance"} | set().union(*(labelled[name] for name in names))) - pinned
            legend = set(re.findall(r"\{\{(\w+)\}\}", target.get("legendFormat", "")))
            assert varying <= legend, f"{panel['title']}: {target['expr']} legend lacks {varying - legend}"
