"""Plans for the sets of tenants a server finds active, and how a plan directory keeps them.

``compile(serve=True)`` searches a plan for each set of :func:`serve_sets` besides the whole
mix (:func:`cosched.search.subsets.search_subset`) and lowers it with :func:`lower_subset`
over the graph cut to the set. :class:`CompiledPlan.save <cosched.compiled.CompiledPlan>`
writes them to ``serve.json`` beside plan.json (:func:`serve_json`), and ``cosched.load()``
reads them back (:func:`read_serve_file`): the plan cache a server looks up by active set
(:mod:`cosched.runtime.plancache`). A set's plan runs the full plan's task ids over the same
model files (serve.json holds no model references of its own: a set's plans take the full
plan's, which :func:`~cosched.codegen.load_plan` has checked by sha256), so its executor
reuses the full plan's weights, traces and sessions.

Which sets: every non-empty proper subset when the mix has at most :data:`MAX_ALL_SUBSETS`
tenants (30 plans for 5); beyond that each tenant alone and each pair, and a set without a
plan of its own is composed at run time from the full plan's schedule
(:func:`cosched.codegen.subset.subset_plan`), which the server's stats report.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cosched.codegen.lower import lower
from cosched.codegen.plan import PLAN_FILE
from cosched.codegen.plancheck import check_plan
from cosched.codegen.planformat import Plan, plan_from_json, plan_to_json
from cosched.codegen.rebuild import check_against_graph
from cosched.codegen.subset import cut_import_options
from cosched.errors import PlanError
from cosched.ir.cut import tenant_graph
from cosched.ir.graph import Graph
from cosched.search.subsets import SubsetResult

__all__ = ["MAX_ALL_SUBSETS", "SERVE_FILE", "SetKey", "lower_subset", "read_serve_file", "serve_json", "serve_sets",
           "set_key", "set_label"]

MAX_ALL_SUBSETS = 5
SERVE_FILE = "serve.json"
SERVE_VERSION = 1
SetKey = frozenset[str]


def set_key(tenants: Iterable[str]) -> SetKey:
    return frozenset([tenants] if isinstance(tenants, str) else tenants)


def set_label(tenants: Iterable[str], order: Sequence[str] = ()) -> str:
    """``a+b``: a set's name in reports, in ``order`` (the plan's tenant order) when given."""
    keep = set_key(tenants)
    ranked = [t for t in order if t in keep] + sorted(keep - set(order))
    return "+".join(ranked)


def serve_sets(tenants: Sequence[str]) -> list[SetKey]:
    """The sets that get a plan of their own besides the whole mix (see the module docstring),
    smallest first, each in ``tenants``' order."""
    n = len(tenants)
    sizes = range(1, n) if n <= MAX_ALL_SUBSETS else range(1, min(3, n))
    return [frozenset(c) for k in sizes for c in itertools.combinations(tenants, k)]


def lower_subset(graph: Graph, found: SubsetResult, *, device: Mapping[str, Any], import_options: Any,
                 latency_critical: Iterable[str], provider: str) -> Plan:
    """The plan of ``found`` (a set's search), lowered over ``graph`` cut to the set."""
    cut = tenant_graph(graph, found.tenants)
    critical = sorted(set(latency_critical) & found.tenants)
    return lower(cut, found.schedule, device=device, timeline=found.timeline,
                 import_options=cut_import_options(import_options, found.tenants),
                 latency_critical=critical, predicted_ms={"plan": found.result.sim.makespan}, provider=provider)


def serve_json(plans: Mapping[SetKey, Plan], order: Sequence[str], slo_ms: Mapping[str, float]) -> str:
    """serve.json's text: the SLOs the plans were searched for and each set's plan."""
    entries = [{"tenants": [t for t in order if t in key], "plan": _without_models(plan)}
               for key, plan in sorted(plans.items(), key=lambda kv: (len(kv[0]), set_label(kv[0], order)))]
    data = {"version": SERVE_VERSION, "slo_ms": dict(slo_ms), "plans": entries}
    return json.dumps(data, indent=1) + "\n"


def read_serve_file(directory: str | Path, plan: Plan, graph: Graph | None = None
                    ) -> tuple[dict[SetKey, Plan], dict[str, float] | None]:
    """The set plans and SLOs kept in ``directory``'s serve.json (``({}, None)`` when it has
    no such file), each plan given ``plan``'s model references and checked: its fields
    against one another and, with ``graph`` (the plan's), against the models cut to its
    tenants (bindings, buffers, race-free streams), as ``cosched.load`` checks plan.json. A
    broken file is a :class:`PlanError` naming the file and the entry."""
    path = Path(directory) / SERVE_FILE
    if not path.is_file():
        return {}, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a readable serve file ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != SERVE_VERSION or not isinstance(data.get("plans"), list):
        raise PlanError(f"{path}: expected a JSON object with version {SERVE_VERSION} and a list 'plans'")
    slo = data.get("slo_ms", {})
    if not isinstance(slo, dict) or not all(t in plan.tenants and _positive(v) for t, v in slo.items()):
        raise PlanError(f"{path}: slo_ms must map tenants of the plan {list(plan.tenants)} to positive ms, got {slo!r}")
    plans: dict[SetKey, Plan] = {}
    for i, entry in enumerate(data["plans"]):
        where = f"{path} plans[{i}]"
        tenants = entry.get("tenants") if isinstance(entry, dict) else None
        if not isinstance(tenants, list) or not tenants or not set(tenants) < set(plan.tenants):
            raise PlanError(f"{where}: 'tenants' must be some (not all) of the plan's {list(plan.tenants)}, "
                            f"got {tenants!r}")
        if set_key(tenants) in plans:
            raise PlanError(f"{where}: a second plan for tenants {sorted(tenants)}")
        if not isinstance(entry.get("plan"), dict):
            raise PlanError(f"{where}: 'plan' must be a plan object, got {type(entry.get('plan')).__name__}")
        raw = dict(entry["plan"])
        raw["models"] = [m for m in plan_to_json(plan)["models"] if m["tenant"] in tenants]
        sub = check_plan(plan_from_json(raw, where, base_dir=plan.base_dir), where)
        if set(sub.tenants) != set(tenants) or sub.device != plan.device or sub.devices or sub.comms:
            raise PlanError(f"{where}: the plan is for tenants {list(sub.tenants)} on {dict(sub.device)}"
                            f"{' over several devices' if sub.devices else ''}, but the entry says {tenants} on the "
                            f"plan's one device {dict(plan.device)}")
        if graph is not None:
            _check_with_models(sub, tenant_graph(graph, tenants), where)
        plans[set_key(tenants)] = sub
    return plans, {str(t): float(v) for t, v in slo.items()}


def _without_models(plan: Plan) -> dict[str, Any]:
    data = plan_to_json(plan)
    del data["models"]  # a set's plan takes the full plan's, checked when it is loaded
    return data


def _check_with_models(plan: Plan, graph: Graph, where: str) -> None:
    try:
        check_against_graph(plan, graph)
    except PlanError as exc:  # its message names plan.json; the entry is in serve.json
        own = f"{Path(plan.base_dir) / PLAN_FILE}: " if plan.base_dir else "plan: "
        raise PlanError(f"{where}: {str(exc).removeprefix(own)}") from None


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
