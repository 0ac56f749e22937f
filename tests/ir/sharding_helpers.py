"""Shared by the sharding tests: zoo graphs imported once, and output comparison."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from cosched import zoo
from cosched.ir import load_models
from cosched.ir.graph import Graph
from cosched.runtime.sequential import SequentialExecutor

RTOL = 1e-5


@cache
def zoo_graph(name: str) -> Graph:
    return load_models([zoo.export(name, size="tiny")], names=[name])


def feeds(name: str) -> dict[str, dict[str, np.ndarray]]:
    return {name: zoo.example_inputs(name, "tiny")}


@cache
def reference(name: str) -> dict[str, dict[str, np.ndarray]]:
    return SequentialExecutor(zoo_graph(name)).run(feeds(name))


def assert_same_outputs(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    """Equal within RTOL relative to each output's largest magnitude (a split sums partial
    products in another order, so elements near zero differ by rounding, not by RTOL of
    themselves)."""
    assert got.keys() == want.keys()
    for tenant in want:
        assert got[tenant].keys() == want[tenant].keys()
        for name, expected in want[tenant].items():
            scale = float(np.max(np.abs(expected))) or 1.0
            np.testing.assert_allclose(got[tenant][name], expected, rtol=RTOL, atol=RTOL * scale,
                                       err_msg=f"{tenant}/{name}")
