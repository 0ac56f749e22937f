"""The one output comparison: absolute and relative error, missing outputs, NaN never agrees."""

from __future__ import annotations

import math

import numpy as np

from cosched.execution.compare import compare_outputs, max_abs_diff, nonfinite_differences


def test_relative_error_is_scaled_by_the_largest_expected_magnitude() -> None:
    want = {"a": {"y": np.array([1.0, -2.0, 4.0])}, "b": {"z": np.array([10.0])}}
    got = {"a": {"y": np.array([1.0, -2.0, 4.2])}, "b": {"z": np.array([10.0])}}
    c = compare_outputs(got, want)
    assert c.max_abs_diff == np.float64(4.2) - 4.0
    assert math.isclose(c.max_rel_err, 0.2 / 4.0)
    assert not c.problems and c.agrees(0.06) and not c.agrees(0.04)


def test_a_missing_output_or_another_shape_is_a_problem_named_by_tenant_and_output() -> None:
    want = {"a": {"y": np.zeros(3), "w": np.zeros(2)}}
    c = compare_outputs({"a": {"y": np.zeros(4)}}, want, ("plan", "reference"))
    assert len(c.missing) == 2 and not c.agrees(1.0)
    assert "'y'" in c.missing[0] and "(3,)" in c.missing[0] and "(4,)" in c.missing[0]
    assert "nothing" in c.missing[1]
    assert c.max_abs_diff == math.inf


def test_nan_never_agrees_but_the_same_infinity_does() -> None:
    inf = {"a": {"y": np.array([1.0, np.inf])}}
    nan = {"a": {"y": np.array([1.0, np.nan])}}
    assert max_abs_diff(inf, inf) == 0.0
    assert max_abs_diff(nan, nan) == math.inf
    messages = nonfinite_differences(nan, inf, ("plan", "reference"))
    assert messages == ["tenant 'a': output 'y' differs by a non-finite amount in 1 of 2 elements "
                        "(plan: 1 NaN, 0 inf; reference: 0 NaN, 1 inf)"]
