"""The gameday's alert rules as a ``PrometheusRule`` for one namespace of a cluster.

The rule file shipped with a gameday (``gamedays/<id>/monitoring/*.rules.yml``) matches series of any
namespace: the lab's have none. A shared Prometheus on a cluster holds every environment's series, and
a ``PrometheusRule`` evaluates across all of them unless its selectors say otherwise, so the rules a
team applies carry ``namespace="<namespace>"`` in every selector (``namespaced_expr``). Alerts keep the
``namespace`` label, which the alert probe filters on.

    python -m gamedaylib.targets.prometheusrule --namespace teei-prod > deploy/prometheusrule-gameday-001.yaml
    python -m gamedaylib.targets.prometheusrule --gameday GAMEDAY-002 --namespace teei-prod \
        > deploy/prometheusrule-gameday-002.yaml
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from gamedaylib import gamedays
from gamedaylib.chaos import DEFAULT_MANIFEST

__all__ = ["DEFAULT_RULES", "metric_names", "namespaced_expr", "prometheus_rule", "render", "rule_file_of"]

DEFAULT_RULES = DEFAULT_MANIFEST.parent / "monitoring" / "gameday-001.rules.yml"

_AGGREGATORS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
}
_IDENT = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def _outside(expr: str) -> str:
    """``expr`` with label matchers, range/offset brackets, strings and grouping label lists blanked."""
    out = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: '"' + " " * (len(m.group(0)) - 2) + '"', expr)
    out = re.sub(r"\{[^}]*\}", lambda m: " " * len(m.group(0)), out)
    out = re.sub(r"\[[^\]]*\]", lambda m: " " * len(m.group(0)), out)
    return _GROUPING.sub(lambda m: " " * len(m.group(0)), out)


def metric_names(expr: str) -> list[str]:
    """The metric names an expression selects, in order of appearance (functions, aggregators,
    keywords and label names left out)."""
    text = _outside(expr)
    names: list[str] = []
    for match in _IDENT.finditer(text):
        name, rest = match.group(1), text[match.end() :].lstrip()
        if rest.startswith("(") or name in _AGGREGATORS or name in _KEYWORDS or re.fullmatch(r"\d\w*", name):
            continue
        if name not in names:
            names.append(name)
    return names


def namespaced_expr(expr: str, namespace: str) -> str:
    """``expr`` with ``namespace="<namespace>"`` added to every selector of every metric it reads."""
    blank = _outside(expr)
    metrics = set(metric_names(expr))
    pieces, last = [], 0
    for match in _IDENT.finditer(blank):
        name = match.group(1)
        if name not in metrics or blank[match.end() :].lstrip().startswith("("):
            continue
        end = match.end()
        pieces.append(expr[last:end])
        if end < len(expr) and expr[end] == "{":
            inner_end = expr.index("}", end)
            inner = expr[end + 1 : inner_end].strip()
            pieces.append("{" + f'namespace="{namespace}"' + (f",{inner}" if inner else "") + "}")
            last = inner_end + 1
        else:
            pieces.append("{" + f'namespace="{namespace}"' + "}")
            last = end
    pieces.append(expr[last:])
    return "".join(pieces)


def prometheus_rule(
    groups: Sequence[Mapping[str, Any]],
    *,
    namespace: str,
    name: str | None = None,
    release: str = "kube-prometheus-stack",
) -> dict[str, Any]:
    """A ``monitoring.coreos.com/v1`` PrometheusRule holding ``groups`` with namespaced selectors, named
    ``name`` (default: the first group's name, e.g. ``gameday-001-nats-partition``)."""
    if name is None:
        name = str(groups[0]["name"]) if groups else "gameday"
    out_groups = []
    for group in groups:
        rules = []
        for rule in group.get("rules") or []:
            copy = dict(rule)
            copy["expr"] = namespaced_expr(str(rule["expr"]), namespace)
            rules.append(copy)
        out_groups.append({**group, "rules": rules})
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "gameday",
                "app.kubernetes.io/part-of": "gameday",
                "release": release,
            },
        },
        "spec": {"groups": out_groups},
    }


HEADER = """\
# {gameday} alert rules as a PrometheusRule, for clusters running the Prometheus Operator
# (kube-prometheus / kube-prometheus-stack):
#   kubectl apply -f deploy/prometheusrule-{stem}.yaml
# The operator loads only PrometheusRules that its Prometheus' `ruleSelector` matches: with the
# kube-prometheus-stack Helm chart that is `release: <your release name>` (default below); check with
#   kubectl get prometheus -A -o jsonpath='{{.items[*].spec.ruleSelector}}'
# and `ruleNamespaceSelector` must admit this namespace.
#
# GENERATED from {source} (do not edit):
#   python -m gamedaylib.targets.prometheusrule{option} --namespace {namespace} \\
#     > deploy/prometheusrule-{stem}.yaml
# Every selector carries namespace="{namespace}": a shared Prometheus holds other environments' series
# (staging's have the same names), and a rule without it would alert on them too.
# The tests fail when this file and the rule file differ.
"""


def rule_file_of(gameday_id: str) -> Path:
    """The alert rule file a gameday ships (``monitoring/<gameday-00N>.rules.yml``)."""
    monitoring = gamedays.scenario(gameday_id).package_dir / gamedays.MONITORING
    found = sorted(monitoring.glob("*.rules.yml"))
    if not found:
        raise FileNotFoundError(f"{gameday_id} ships no alert rules in {monitoring}")
    return found[0]


def render(rule_file: Path = DEFAULT_RULES, *, namespace: str, release: str = "kube-prometheus-stack") -> str:
    """The PrometheusRule YAML (with its header) for ``rule_file`` in ``namespace``."""
    doc = yaml.safe_load(rule_file.read_text(encoding="utf-8")) or {}
    body = prometheus_rule(doc.get("groups") or [], namespace=namespace, release=release)
    stem = rule_file.name.removesuffix(".rules.yml")
    package = Path(gamedays.__file__).resolve().parent.parent.parent
    try:
        source = str(rule_file.resolve().relative_to(package))
    except ValueError:
        source = str(rule_file)
    option = "" if rule_file.resolve() == DEFAULT_RULES.resolve() else f" --gameday {stem.upper()}"
    header = HEADER.format(gameday=stem.upper(), stem=stem, source=source, option=option, namespace=namespace)
    return header + yaml.safe_dump(body, sort_keys=False, width=110)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--release", default="kube-prometheus-stack")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--rules", type=Path, default=None, help="a rule file (default: GAMEDAY-001's)")
    which.add_argument("--gameday", help="the rule file this gameday ships (e.g. GAMEDAY-002)")
    args = parser.parse_args(argv)
    rules = rule_file_of(args.gameday) if args.gameday else (args.rules or DEFAULT_RULES)
    sys.stdout.write(render(rules, namespace=args.namespace, release=args.release))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
