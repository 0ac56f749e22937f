"""A small pass infrastructure: graph -> graph functions that verify the seams.

A :class:`Pass` is a named, functional transformation of a :class:`~cosched.ir.graph.Graph`.
Calling it verifies the input graph, runs :meth:`Pass.run`, and verifies the result, so a
broken invariant is reported by the pass that made it, not three stages later. A failure
inside a pass is re-raised as the same :class:`~cosched.errors.CoschedError` subclass with
the pass's name in front of the message; any other exception gets the same context as a
note, so tracebacks still point at the bug.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from cosched.errors import CoschedError, GraphError
from cosched.ir.graph import Graph

__all__ = ["Pass"]


class Pass(ABC):
    """A functional graph pass: ``new_graph = pass_(graph)``; the input graph is untouched."""

    #: Name used in error messages; defaults to the class name.
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or type(self).__name__

    @abstractmethod
    def run(self, graph: Graph) -> Graph:
        """Return the transformed graph. Called by ``__call__`` between two verifications."""

    def __call__(self, graph: Graph) -> Graph:
        try:
            graph.verify()
        except GraphError as exc:
            raise GraphError(f"pass {self.label!r} got an invalid graph: {exc}") from exc
        try:
            result = self.run(graph)
        except CoschedError as exc:
            raise type(exc)(f"pass {self.label!r} failed: {exc}") from exc
        except Exception as exc:
            exc.add_note(f"raised in pass {self.label!r}")
            raise
        try:
            return result.verify()
        except GraphError as exc:
            raise GraphError(f"pass {self.label!r} produced an invalid graph: {exc}") from exc
