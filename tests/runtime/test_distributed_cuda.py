"""A two-rank CUDA plan on torch.distributed: NCCL on two GPUs (gpu-marked), and refused before
any rank starts on a machine without the GPUs it names (runs anywhere)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "codegen"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "gpu"))
from kit import AGREE_REL, two_rank_plan
from plan_graphs import all_reduced

from cosched.codegen import emit_python, lower, save_plan
from cosched.errors import DeviceError
from cosched.runtime.launch import launch
from cosched.search.schedule import Schedule

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.skipif(GPUS < 2, reason=f"needs two CUDA devices for a two-rank NCCL run; this machine has {GPUS}")
def test_a_two_rank_cuda_plan_agrees_with_sequential_execution(tmp_path: Path) -> None:
    plan = two_rank_plan(tmp_path / "plan", "cuda")
    result = launch(plan, args=["--iters", "2", "--warmup", "1", "--compare", "sequential"], timeout_s=120)
    report = result["report"]
    assert report["device"] == {**report["device"], "kind": "cuda", "ranks": 2}
    assert [r["device"] for r in report["ranks"]] == ["cuda:0", "cuda:1"]
    assert sum(r["comm_tasks"] for r in report["ranks"]) > 0
    assert report["max_rel_err"] <= AGREE_REL, report
    assert set(result["outputs"]) == {"bert", "dlrm"}


def test_a_cuda_plan_needing_more_gpus_than_here_is_refused_before_any_rank_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed.launcher.api as launcher

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("a rank was started")

    monkeypatch.setattr(launcher, "elastic_launch", started)
    graph = all_reduced(tmp_path)
    devices = [{"kind": "cuda", "index": 0}, {"kind": "cuda", "index": max(1, GPUS)}]
    plan = lower(graph, Schedule((((1, 3, 5),), ((0, 2, 4, 6),))), device={"kind": "cuda", "name": "test-gpu"},
                 devices=devices)
    save_plan(plan, tmp_path / "plan", module_source=emit_python(plan))
    label = f"cuda:{max(1, GPUS)}"
    with pytest.raises(DeviceError, match=rf"the plan runs on cuda:0, {label}, but this machine has {GPUS} CUDA "
                                          r"device\(s\); compile for the devices it has"):
        launch(tmp_path / "plan")
