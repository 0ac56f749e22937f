"""Lowering schedules over several devices: placement, transfers, collectives, memory (schema 2)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from plan_graphs import all_reduced, pipelined, tenant_mix

from cosched.codegen import emit_python, load_module, load_plan, lower, plan_schema, save_plan
from cosched.codegen.plan import Instruction, Plan, StreamPlan, plan_from_json, plan_to_json
from cosched.codegen.plancheck import check_plan
from cosched.codegen.steps import issue_steps
from cosched.codegen.verify import verify_plan
from cosched.errors import DeviceError, PlanError
from cosched.search.schedule import Schedule

CPU = {"kind": "cpu", "name": "test-cpu"}
TWO = [{"kind": "cpu", "index": 0, "cap_bytes": 10_000}, {"kind": "cpu", "index": 1, "cap_bytes": 10_000}]


def placed(tmp_path: Path) -> Plan:
    """Tenants a and b of the diamond mix, each on a device of its own (two streams on 0)."""
    g = tenant_mix(tmp_path, ("a", "b"))
    return lower(g, Schedule((((0, 1, 3, 4), (2,)), ((5, 6, 7, 8, 9),))), device=CPU, devices=TWO)


def pipeline_plan(tmp_path: Path) -> Plan:
    g = pipelined(tmp_path)
    return lower(g, Schedule((((0, 1),), ((2, 3, 4),))), device=CPU)


def instructions(plan: Plan, stream: int) -> list[tuple[str, int | None]]:
    return [(i.op, i.event if i.op in ("record", "wait") else i.task) for i in plan.streams[stream].instructions]


# ------------------------------------------------------------------ placement
def test_placed_tenants_need_no_communication_and_events_stay_on_their_device(tmp_path: Path) -> None:
    plan = placed(tmp_path)
    assert plan.schema_version == 2 and plan.comms == ()
    assert [(d.rank, d.label, d.cap_bytes) for d in plan.devices] == [(0, "cpu:0", 10_000), (1, "cpu:1", 10_000)]
    assert [s.device for s in plan.streams] == [0, 0, 1]
    stream_device = {s.id: s.device for s in plan.streams}
    assert plan.events and all(stream_device[e.stream] == plan.device_of_task()[w]
                               for e in plan.events for w in e.waiters)
    assert not any(i.op == "send" for s in plan.streams for i in s.instructions)


def test_plan_json_is_version_2_and_round_trips(tmp_path: Path) -> None:
    plan = placed(tmp_path)
    data = plan_to_json(plan)
    assert data["schema_version"] == 2 and list(data)[-3:] == ["devices", "comms", "splits"]
    jsonschema.Draft202012Validator(plan_schema()).validate(data)
    assert plan_from_json(json.loads(json.dumps(data))) == plan


def test_a_version_1_document_may_not_carry_version_2_fields(tmp_path: Path) -> None:
    data = plan_to_json(placed(tmp_path))
    data["schema_version"] = 1
    with pytest.raises(PlanError, match=r"^p: a schema_version 1 plan has devices, comms, splits"):
        plan_from_json(data, "p")
    assert not jsonschema.Draft202012Validator(plan_schema()).is_valid(data)
    data = plan_to_json(placed(tmp_path))
    del data["devices"]
    with pytest.raises(PlanError, match=r"schema_version 2 plan must list its devices"):
        plan_from_json(data, "p")
    assert not jsonschema.Draft202012Validator(plan_schema()).is_valid(data)


def test_one_device_with_a_cap_stays_version_1(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, ("a",))
    plan = lower(g, [[0, 1, 2, 3, 4]], device=CPU, devices=[{"kind": "cpu", "index": 0, "cap_bytes": 1 << 20}])
    assert plan.schema_version == 1 and plan_to_json(plan)["schema_version"] == 1
    assert plan == lower(g, [[0, 1, 2, 3, 4]], device=CPU)
    with pytest.raises(PlanError, match=r"device cpu:0 \(rank 0\) needs 384 bytes .* tenants a, over its cap of 100"):
        lower(g, [[0, 1, 2, 3, 4]], device=CPU, devices=[{"kind": "cpu", "index": 0, "cap_bytes": 100}])


def test_a_dependency_across_devices_without_communication_is_refused(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, ("a",))
    with pytest.raises(PlanError, match=r"task 1 \(a:matmul\) on device 1 reads 'a/relu_out' of task 0 \(a:relu\) "
                                        r"on device 0, but only a Transfer or a collective"):
        lower(g, Schedule((((0, 2, 3, 4),), ((1,),))), device=CPU)


def test_devices_must_match_the_schedule_and_the_kind(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, ("a", "b"))
    sched = Schedule((((0, 1, 2, 3, 4),), ((5, 6, 7, 8, 9),)))
    with pytest.raises(PlanError, match=r"runs on 2 device\(s\), but 1 device\(s\) are given"):
        lower(g, sched, device=CPU, devices=TWO[:1])
    with pytest.raises(PlanError, match=r"device 1 is of kind 'cuda', but the plan is compiled for 'cpu'"):
        lower(g, sched, device=CPU, devices=[TWO[0], {"kind": "cuda", "index": 0}])
    with pytest.raises(PlanError, match=r"name a device twice"):
        lower(g, sched, device=CPU, devices=[TWO[0], TWO[0]])


# ------------------------------------------------------------------ memory
def test_memory_per_device_is_weights_plus_peak_activations(tmp_path: Path) -> None:
    plan = placed(tmp_path)
    # each op writes a 4x8 float32 (128 bytes). Device 1 runs b's diamond on one stream:
    # relu (128 alive), matmul (256), shift (384, then relu_out dies: 256), join (384, then
    # shift_out dies: 256), square (384, then join_out dies); matmul_out and square_out are
    # outputs and stay: at most three tensors alive, 384 bytes.
    assert plan.devices[1].peak_activation_bytes == 3 * 128
    assert plan.devices[1].weight_bytes == 0 and plan.devices[1].needed_bytes == 384
    with pytest.raises(PlanError, match=r"device cpu:1 \(rank 1\) needs 384 bytes \(0 of weights \+ 384 of "
                                        r"activations at their peak\) for tenants b, over its cap of 383 bytes"):
        lower(tenant_mix(tmp_path, ("a", "b")), Schedule((((0, 1, 3, 4), (2,)), ((5, 6, 7, 8, 9),))),
              device=CPU, devices=[TWO[0], {"kind": "cpu", "index": 1, "cap_bytes": 383}])


def test_a_plan_over_its_cap_is_refused_on_load(tmp_path: Path) -> None:
    plan = placed(tmp_path)
    over = plan.replace(devices=(plan.devices[0], replace(plan.devices[1], cap_bytes=100)))
    with pytest.raises(PlanError, match=r"devices\[1\] \(cpu:1\): needs 384 bytes .* over its limit of 100"):
        check_plan(over)


# ------------------------------------------------------------------ transfers
def test_a_transfer_is_sent_right_after_its_producer(tmp_path: Path) -> None:
    plan = pipeline_plan(tmp_path)
    assert instructions(plan, 0) == [("run", 0), ("run", 1), ("send", 2)]
    assert plan.streams[0].instructions[-1] == Instruction("send", task=2, peer=1)
    assert instructions(plan, 1) == [("run", 2), ("run", 3), ("run", 4)]
    (comm,) = plan.comms
    assert (comm.task, comm.op, comm.peers, comm.nbytes) == (2, "transfer", (0, 1), 128)
    sent = next(b for b in plan.buffers if b.tensor == "a/matmul_out")
    assert sent.use_tasks == (2,) and sent.free_after is None  # the send may still read it
    assert plan.events == ()
    verify_plan(plan)


def test_a_transfer_without_its_send_deadlocks(tmp_path: Path) -> None:
    plan = pipeline_plan(tmp_path)
    unsent = plan.replace(streams=(replace(plan.streams[0], instructions=plan.streams[0].instructions[:-1]),
                                   plan.streams[1]))
    with pytest.raises(PlanError, match=r"stream 1 waits for the send of transfer task 2 from device 0"):
        verify_plan(unsent)
    with pytest.raises(PlanError, match=r"transfer task 2 moves a tensor from device 0 to 1, but no stream sends"):
        check_plan(unsent)


def test_sends_must_match_their_transfer(tmp_path: Path) -> None:
    plan = pipeline_plan(tmp_path)
    wrong = (*plan.streams[0].instructions[:-1], Instruction("send", task=2, peer=0))
    with pytest.raises(PlanError, match=r"sends task 2's input from device 0 to 0, but the transfer's peers are "
                                        r"\[0, 1\]"):
        check_plan(plan.replace(streams=(replace(plan.streams[0], instructions=wrong), plan.streams[1])))
    bogus = (*plan.streams[0].instructions, Instruction("send", task=1, peer=1))
    with pytest.raises(PlanError, match=r"sends for task 1, which is no transfer of the plan"):
        check_plan(plan.replace(streams=(replace(plan.streams[0], instructions=bogus), plan.streams[1])))


def test_a_transfer_within_one_device_is_a_local_copy(tmp_path: Path) -> None:
    g = pipelined(tmp_path)
    plan = lower(g, Schedule((((0, 1, 2), (3, 4)), ((),))), device=CPU)
    assert plan.comms[0].peers == (0, 0) and not any(i.op == "send" for s in plan.streams for i in s.instructions)
    assert plan.devices[1].peak_activation_bytes == 0


def test_an_event_across_devices_is_refused(tmp_path: Path) -> None:
    plan = placed(tmp_path)
    event = plan.events[0]
    moved = plan.streams[2]
    waiting = replace(moved, instructions=(Instruction("wait", event=event.id), *moved.instructions))
    bad = plan.replace(streams=(*plan.streams[:2], waiting),
                       events=(replace(event, waiters=(*event.waiters, 5)), *plan.events[1:]))
    with pytest.raises(PlanError, match=r"events\[0\]: recorded on stream \d of device 0, but waited on by task 5 "
                                        r"of device 1; events order tasks of one device only"):
        check_plan(bad)


# ------------------------------------------------------------------ collectives
RANKED = Schedule((((1, 3, 5),), ((0, 2, 4, 6),)))
"""all_reduced's tasks with slot 0 on device 0 and slot 1 on device 1."""


def test_collective_ranks_run_on_their_devices_and_meet(tmp_path: Path) -> None:
    g = all_reduced(tmp_path)
    plan = lower(g, RANKED, device=CPU)
    assert [(c.task, c.op, c.group, c.rank, c.peers) for c in plan.comms] == [
        (0, "transfer", "", None, (0, 1)), (3, "all_reduce", "g", 0, (0, 1)), (4, "all_reduce", "g", 1, (0, 1))]
    assert plan.events == () and verify_plan(plan) is plan
    relu = next(b for b in plan.buffers if b.tensor == "t/g_relu_out")
    assert relu.use_tasks == (3, 4) and relu.free_after == 3  # rank 1 reads it through the group


def test_an_input_moved_to_another_slot_is_sent_first_from_the_slot_that_is_fed(tmp_path: Path) -> None:
    plan = lower(all_reduced(tmp_path), RANKED, device=CPU)
    assert instructions(plan, 0) == [("send", 0), ("run", 1), ("run", 3), ("run", 5)]
    assert plan.streams[0].instructions[0].peer == 1
    assert next(s.op for s in issue_steps(plan) if s.stream == 0) == "send"
    unplaced = plan.replace(streams=(replace(plan.streams[0], instructions=plan.streams[0].instructions[1:]),
                                     plan.streams[1]))
    with pytest.raises(PlanError, match=r"stream 1 waits for the send of transfer task 0 from device 0"):
        verify_plan(unplaced)


def test_collectives_met_in_opposite_orders_are_refused(tmp_path: Path) -> None:
    g = all_reduced(tmp_path, ("g", "h"))  # g: tasks 1..6, h: tasks 7..12
    with pytest.raises(PlanError, match=r"collective groups 'g', 'h' wait on one another"):
        lower(g, Schedule((((1, 7, 3, 9, 5, 11),), ((0, 2, 8, 10, 4, 6, 12),))), device=CPU)
    plan = lower(g, Schedule((((1, 7, 3, 9, 5, 11),), ((0, 2, 8, 4, 10, 6, 12),))), device=CPU)
    assert [t for t in plan.issue_order if t in (3, 4, 9, 10)] == [3, 4, 9, 10]  # each group issued at once
    runs = plan.streams[1].instructions
    swapped = replace(plan.streams[1], instructions=(*runs[:3], runs[4], runs[3], *runs[5:]))
    with pytest.raises(PlanError, match=r"deadlocks: .*in collective group 'g'.*in collective group 'h'"):
        verify_plan(plan.replace(streams=(plan.streams[0], swapped)))


def test_collectives_on_several_streams_are_issued_alike_on_every_device(tmp_path: Path) -> None:
    g = all_reduced(tmp_path, ("g", "h"))
    plan = lower(g, Schedule((((1, 3, 5), (7, 9, 11)), ((0, 2, 4, 6), (8, 10, 12)))), device=CPU,
                 timeline={t: (10.0 if t in (3, 10) else 1.0 * t, 20.0) for t in range(13)})
    ranks = [t for t in plan.issue_order if t in (3, 4, 9, 10)]
    assert {frozenset(ranks[:2]), frozenset(ranks[2:])} == {frozenset((3, 4)), frozenset((9, 10))}
    mixed = plan.replace(issue_order=tuple(sorted(plan.issue_order, key=lambda t: {4: 100, 9: 101}.get(t, t))))
    with pytest.raises(PlanError, match=r"issue_order meets collective groups 'g' and 'h' in one order on device 0 "
                                        r"and in the other on device 1"):
        verify_plan(mixed)


def test_a_collective_on_one_device_or_fed_from_elsewhere_is_refused(tmp_path: Path) -> None:
    g = all_reduced(tmp_path)
    with pytest.raises(PlanError, match=r"collective group 'g' runs rank 0 on device 0, rank 1 on device 0: its "
                                        r"ranks must run on distinct devices"):
        lower(g, Schedule((((1, 3, 4, 5, 6),), ((0, 2),))), device=CPU)
    with pytest.raises(PlanError, match=r"input 1 \('t/g_neg_out'\) of task 3 \(t:g_sum0\) is produced by task 2 "
                                        r"\(t:g_neg\) on device 0, but rank 1 runs on device 1"):
        lower(g, Schedule((((0, 1, 2, 3, 5),), ((4, 6),))), device=CPU)


def test_an_incomplete_group_is_refused_on_load(tmp_path: Path) -> None:
    plan = lower(all_reduced(tmp_path), RANKED, device=CPU)
    with pytest.raises(PlanError, match=r"collective group 'g' of world 2 has ranks \[0\]; it needs each of 0..1"):
        check_plan(plan.replace(comms=plan.comms[:2]))


# ------------------------------------------------------------------ files and code
def test_saved_and_loaded_with_no_weights(tmp_path: Path) -> None:
    plan = pipeline_plan(tmp_path)
    out = tmp_path / "plan"
    save_plan(plan, out, module_source=emit_python(plan))
    assert sorted(p.name for p in out.iterdir()) == ["models", "plan.json", "plan_module.py"]
    assert load_plan(out).replace(models=plan.models) == plan


def test_emitted_module_has_a_section_per_rank(tmp_path: Path) -> None:
    plan = pipeline_plan(tmp_path)
    source = emit_python(plan)
    assert "# rank 0: cpu:0 (test-cpu), streams 0" in source and "# rank 1: cpu:1 (test-cpu), streams 1" in source
    assert "m.send(0, 2, 1)" in source and "#   receives from device 0" in source
    assert source.index("def stream_0") < source.index("def issue_rank_0") < source.index("def stream_1")
    module = load_module(source)
    assert module.RANKS[1]["device"] == "cpu:1" and module.RANKS[1]["streams"] == (module.stream_1,)

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[tuple[str, tuple[int, ...]]] = []

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return lambda *args: self.calls.append((name, args))

    m = Recorder()
    module.issue_rank_0(m)
    assert [c for c in m.calls if c[0] != "free"] == [("run", (0, 0)), ("run", (0, 1)), ("send", (0, 2, 1))]
    assert [s.op for s in issue_steps(plan) if s.stream == 0] == ["run", "run", "free", "send"]


def test_emitted_collective_names_its_group(tmp_path: Path) -> None:
    plan = lower(all_reduced(tmp_path), RANKED, device=CPU)
    assert "#   all_reduce group g, rank 1 of devices 0, 1: waits for every rank" in emit_python(plan)


def test_stream_ids_are_global_across_devices(tmp_path: Path) -> None:
    plan = placed(tmp_path)
    assert [s.id for s in plan.streams] == [0, 1, 2]
    renumbered = plan.replace(streams=(*plan.streams[:2], StreamPlan(5, 1, plan.streams[2].instructions)))
    with pytest.raises(PlanError, match="stream ids must be"):
        verify_plan(renumbered)


def test_the_capacity_limits_a_device_without_a_cap_and_0_means_unknown(tmp_path: Path) -> None:
    g = tenant_mix(tmp_path, ("a", "b"))
    sched = Schedule((((0, 1, 2, 3, 4),), ((5, 6, 7, 8, 9),)))
    with pytest.raises(PlanError, match=r"device cpu:1 \(rank 1\) needs 384 bytes .* over its memory of 300 bytes"):
        lower(g, sched, device=CPU, devices=[TWO[0], {"kind": "cpu", "index": 1, "memory_bytes": 300}])
    plan = lower(g, sched, device={**CPU, "memory_bytes": 0})
    assert [(d.memory_bytes, d.cap_bytes, d.limit_bytes) for d in plan.devices] == [(0, None, None)] * 2


def test_the_executor_refuses_a_multi_device_plan_before_any_work(tmp_path: Path) -> None:
    from cosched.runtime.executor import Executor

    plan = placed(tmp_path)
    for model in tmp_path.glob("*.onnx"):
        model.unlink()  # refused before re-importing the models
    with pytest.raises(DeviceError, match=r"the plan runs on 2 devices \(cpu:0, cpu:1\); a multi-device plan needs "
                                          r"the distributed runtime"):
        Executor(plan)


def test_a_split_tenant_on_one_device_is_a_version_2_plan(tmp_path: Path) -> None:
    spec = {"kind": "pipeline", "tenant": "a", "world": 2, "options": {}}
    plan = lower(pipelined(tmp_path), [[0, 1, 2, 3, 4]], device=CPU, splits=[spec])
    assert plan.schema_version == 2 and [d.label for d in plan.devices] == ["cpu:0"]
    assert plan.comms[0].peers == (0, 0) and plan.splits == (spec,)
    assert plan_from_json(json.loads(json.dumps(plan_to_json(plan)))) == plan
    check_plan(plan)
