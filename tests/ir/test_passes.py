"""The pass infrastructure: verification around passes and errors that name the pass."""

from __future__ import annotations

import pytest
from tiny_graphs import GraphBuilder

from cosched.errors import GraphError, ShapeError
from cosched.ir.analysis import Analyse
from cosched.ir.fusion import Fuse
from cosched.ir.graph import Graph, Task
from cosched.ir.passes import Pass


def _graph() -> Graph:
    b = GraphBuilder()
    x = b.input("m", "x", (2, 3))
    y = b.op("m", "Relu", [x], (2, 3), name="relu")
    return b.build({"m": [y]})


class _Raises(Pass):
    name = "raiser"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def run(self, graph: Graph) -> Graph:
        raise self.exc


class _DropsOps(Pass):
    name = "dropper"

    def run(self, graph: Graph) -> Graph:
        return graph.replace(tasks=(Task(0, "m", ("m/nope",)),))


def test_failure_is_reraised_with_the_pass_name_and_same_type() -> None:
    with pytest.raises(ShapeError, match=r"pass 'raiser' failed: tensor 'm/t' is bad"):
        _Raises(ShapeError("tensor 'm/t' is bad"))(_graph())


def test_invalid_result_is_caught_at_the_pass_that_made_it() -> None:
    with pytest.raises(GraphError, match=r"pass 'dropper' produced an invalid graph.*m/nope"):
        _DropsOps()(Analyse()(_graph()))


def test_invalid_input_graph_is_refused() -> None:
    broken = _graph().replace(tasks=(Task(0, "m", ("m/missing",)),))
    with pytest.raises(GraphError, match=r"pass 'fuse' got an invalid graph.*m/missing"):
        Fuse()(broken)


def test_other_exceptions_keep_their_type_and_gain_a_note() -> None:
    with pytest.raises(KeyError) as info:
        _Raises(KeyError("k"))(_graph())
    assert "raised in pass 'raiser'" in info.value.__notes__


def test_a_graph_is_checked_once_and_a_broken_one_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = Graph._verify_tasks
    monkeypatch.setattr(Graph, "_verify_tasks", lambda self: calls.append(1) or original(self))
    graph = _graph()
    Analyse()(Fuse()(graph.verify()))  # verified on load, and by each pass: its input and result
    assert graph.verify() is graph and len(calls) == 3  # the input once, then each pass's result
    broken = graph.replace(tasks=(Task(0, "m", ("m/missing",)),))
    for _ in range(2):
        with pytest.raises(GraphError, match="m/missing"):
            broken.verify()
