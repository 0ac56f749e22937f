"""Executing graphs and plans: sequential reference, CPU threads, CUDA streams, distributed."""

from __future__ import annotations

from cosched.runtime.bindings import random_inputs
from cosched.runtime.sequential import SequentialExecutor

__all__ = ["SequentialExecutor", "random_inputs"]
