"""CompiledPlan's checks that need no compile: output comparison, failure messages, device."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cosched.compiled import CompiledPlan, check_device, max_abs_diff, nonfinite_differences
from cosched.errors import DeviceError, RuntimeFailure


def _out(*values: float) -> dict[str, dict[str, np.ndarray]]:
    return {"t": {"y": np.array(values, np.float32)}}


def test_finite_outputs_compare_by_their_largest_difference() -> None:
    assert max_abs_diff(_out(1, 2, 3), _out(1, 2.5, 3)) == pytest.approx(0.5)
    assert nonfinite_differences(_out(1, 2, 3), _out(1, 2.5, 3)) == []


@pytest.mark.parametrize(
    ("a", "b"),
    [((1, np.nan), (1, np.nan)), ((1, np.nan), (1, 2)), ((np.inf, 0), (-np.inf, 0)), ((np.inf, 0), (1, 0))],
)
def test_nonfinite_differences_are_a_mismatch_not_zero(a: tuple[float, ...], b: tuple[float, ...]) -> None:
    assert max_abs_diff(_out(*a), _out(*b)) == float("inf")
    (message,) = nonfinite_differences(_out(*a), _out(*b), ("plan", "sequential"))
    assert "tenant 't': output 'y'" in message and "1 of 2 elements" in message and "sequential:" in message


def test_the_same_infinity_on_both_sides_agrees() -> None:
    assert max_abs_diff(_out(np.inf, 1), _out(np.inf, 1)) == 0.0
    assert nonfinite_differences(_out(np.inf, 1), _out(np.inf, 1)) == []


def test_a_failure_carrying_a_torchscript_traceback_becomes_one_line() -> None:
    message = (
        "task 3 (bert:embed) on stream 0 failed: RuntimeError: The following operation failed in the "
        "TorchScript interpreter.\nTraceback of TorchScript (most recent call last):\n"
        "/x/indexing.py(80): gather\n/x/kernels.py(34): __call__\nRuntimeError: index out of range in self\n"
    )

    class Failing:
        def run(self, feed: object, profile: bool = False) -> None:
            raise RuntimeFailure(message)

    plan = CompiledPlan.__new__(CompiledPlan)
    plan.graph = SimpleNamespace(tenants=(), tenant_names=(), ops=())
    plan.plan = SimpleNamespace(devices=())  # one device
    plan._executor = Failing()  # type: ignore[assignment]
    with pytest.raises(RuntimeFailure) as caught:
        plan.run({})
    assert str(caught.value) == "task 3 (bert:embed) on stream 0 failed: RuntimeError: index out of range in self"


def test_a_cuda_plan_needs_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = SimpleNamespace(device_kind="cuda", device={"kind": "cuda", "index": 1, "name": "H100"}, base_dir="/p")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"plan /p was compiled for cuda:1 \(H100\).*no CUDA device"):
        check_device(plan)  # type: ignore[arg-type]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"cuda:1 .* has 1 CUDA device"):
        check_device(plan)  # type: ignore[arg-type]
    check_device(SimpleNamespace(device_kind="cpu"))  # type: ignore[arg-type]
