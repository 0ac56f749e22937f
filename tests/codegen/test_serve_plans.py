"""compile(serve=True): a plan per set of tenants, searched, saved in serve.json, loaded back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cosched
from cosched import zoo
from cosched.cli import main as cli_main
from cosched.codegen.serving import SERVE_FILE, read_serve_file, serve_sets
from cosched.codegen.verify import verify_plan
from cosched.errors import ConfigError, PlanError
from cosched.ir.cut import tenant_graph

NAMES = ["resnet50", "mobilenet_v2", "dlrm"]


@pytest.fixture(scope="module")
def served() -> cosched.CompiledPlan:
    return cosched.compile([zoo.export(n, size="tiny") for n in NAMES], names=NAMES, cost_model="roofline",
                           trials=4, max_streams=2, slo_ms={"dlrm": 40.0}, serve=True, in_situ=False)


def test_sets_are_every_proper_subset_up_to_five_tenants_then_singles_and_pairs() -> None:
    assert serve_sets(["a", "b", "c"]) == [frozenset("a"), frozenset("b"), frozenset("c"), frozenset("ab"),
                                           frozenset("ac"), frozenset("bc")]
    assert len(serve_sets(list("abcde"))) == 2 ** 5 - 2
    six = serve_sets(list("abcdef"))
    assert len(six) == 6 + 15 and {len(s) for s in six} == {1, 2}


def test_each_set_gets_a_searched_plan_over_the_full_plans_task_ids(served: cosched.CompiledPlan) -> None:
    assert set(served.subsets) == set(serve_sets(NAMES))
    for key, plan in served.subsets.items():
        assert set(plan.tenants) == key
        assert {t.id for t in plan.tasks} == {t.id for t in served.plan.tasks if t.tenant in key}
        assert plan.predicted_ms["plan"] > 0 and plan.timeline
        verify_plan(plan, tenant_graph(served.graph, key))
        critical = {s.priority < 0 for s in plan.streams if any(served.plan.task_spec(t).tenant == "dlrm"
                                                                for t in s.tasks)}
        assert critical <= {True}  # dlrm's SLO gives its streams priority in every set holding it
    assert served.report()["serve"]["resnet50+mobilenet_v2"]["streams"] >= 1


def test_the_plan_cache_is_saved_and_loaded_with_the_plan(served: cosched.CompiledPlan, tmp_path: Path) -> None:
    served.save(tmp_path / "plan")
    data = json.loads((tmp_path / "plan" / SERVE_FILE).read_text())
    assert data["slo_ms"] == {"dlrm": 40.0} and len(data["plans"]) == 6
    assert all("models" not in entry["plan"] for entry in data["plans"])  # a set's plans take the full plan's
    loaded = cosched.load(tmp_path / "plan")
    assert loaded.serve_slo_ms == {"dlrm": 40.0}
    assert {k: [s.tasks for s in p.streams] for k, p in loaded.subsets.items()} == {
        k: [s.tasks for s in p.streams] for k, p in served.subsets.items()}
    assert all(p.models == tuple(m for m in loaded.plan.models if m.tenant in k) for k, p in loaded.subsets.items())


def test_one_tenant_compiled_to_serve_keeps_its_slo(tmp_path: Path) -> None:
    one = cosched.compile([zoo.export("dlrm", size="tiny")], names=["dlrm"], cost_model="roofline", trials=0,
                          serve=True, slo_ms={"dlrm": 9.0})
    one.save(tmp_path / "plan")
    loaded = cosched.load(tmp_path / "plan")
    assert loaded.subsets == {} and loaded.serve_slo_ms == {"dlrm": 9.0}


def test_a_plan_without_serve_has_no_cache(tmp_path: Path) -> None:
    plain = cosched.compile([zoo.export("dlrm", size="tiny")], names=["dlrm"], cost_model="roofline", trials=0)
    plain.save(tmp_path / "plan")
    assert not (tmp_path / "plan" / SERVE_FILE).exists() and cosched.load(tmp_path / "plan").subsets == {}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(version=9), "version 1"),
    (lambda d: d["plans"][0].update(tenants=["gpt"]), r"plans\[0\]: 'tenants' must be some \(not all\)"),
    (lambda d: d["plans"][0].update(tenants=["resnet50", "mobilenet_v2", "dlrm"]), "some \\(not all\\)"),
    (lambda d: d["plans"][1].update(tenants=["resnet50"]), r"plans\[1\]: .*is for tenants|plans\[1\]"),
    (lambda d: d.update(slo_ms={"dlrm": -1}), "slo_ms must map tenants"),
    (lambda d: d["plans"][0]["plan"]["streams"].clear(), r"plans\[0\]"),
    (lambda d: d["plans"].append(d["plans"][0]), r"plans\[6\]: a second plan for tenants"),
    (lambda d: d["plans"][0].update(plan=[1]), r"plans\[0\]: 'plan' must be a plan object, got list"),
    (lambda d: d.update(slo_ms={"dlrm": float("inf")}), "slo_ms must map tenants"),
    (lambda d: d["plans"][0]["plan"]["inputs"][0].update(tensor="resnet50/nothing"), r"plans\[0\]: inputs"),
])
def test_a_broken_serve_file_is_named(served: cosched.CompiledPlan, tmp_path: Path, edit, message) -> None:
    served.save(tmp_path / "plan")
    path = tmp_path / "plan" / SERVE_FILE
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(PlanError, match=message):
        cosched.load(tmp_path / "plan")
    path.write_text("{not json")
    with pytest.raises(PlanError, match=f"{SERVE_FILE}: not a readable serve file"):
        read_serve_file(tmp_path / "plan", served.plan)


def test_input_shapes_of_other_tenants_do_not_reach_a_sets_plan(tmp_path: Path) -> None:
    files = [zoo.export(n, size="tiny") for n in ("resnet50", "dlrm")]
    probe = cosched.compile(files, names=["resnet50", "dlrm"], cost_model="roofline", trials=0)
    own, name = probe.graph.tenant("resnet50").inputs[0]
    shape = list(probe.graph.tensor(name).shape)
    served = cosched.compile(files, names=["resnet50", "dlrm"], cost_model="roofline", trials=0, serve=True,
                             input_shapes={"resnet50": {own: shape}})
    served.save(tmp_path / "plan")
    loaded = cosched.load(tmp_path / "plan")
    assert set(loaded.subsets[frozenset({"dlrm"})].import_options.input_shapes) == {"dlrm"}
    assert loaded.subsets[frozenset({"resnet50"})].import_options.input_shapes == {"resnet50": {own: shape}}


def test_serve_is_for_one_device() -> None:
    with pytest.raises(ConfigError, match=r"serve.*one-device plans"):
        cosched.compile([zoo.export("dlrm", size="tiny")], serve=True, devices=["cpu:0", "cpu:1"])
    with pytest.raises(ConfigError, match="serve must be True or False"):
        cosched.compile([zoo.export("dlrm", size="tiny")], serve="yes")


def test_the_cli_flag_writes_the_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(zoo.export(n, size="tiny")) for n in ("mobilenet_v2", "dlrm")]
    assert cli_main(["compile", *files, "-o", str(tmp_path / "plan"), "--cost-model", "roofline",
                     "--trials", "0", "--serve", "--slo", f"{Path(files[1]).stem}=30"]) == 0
    out = capsys.readouterr().out
    assert "plans for serving (2 sets of tenants" in out and "serve.json)" in out
    loaded = cosched.load(tmp_path / "plan")
    assert len(loaded.subsets) == 2 and loaded.serve_slo_ms == {Path(files[1]).stem: 30.0}
