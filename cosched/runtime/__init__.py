"""Executing graphs and plans: sequential reference, CPU threads, CUDA streams, and
multi-device plans on torch.distributed, one process per device (:mod:`.distributed`, started
by :mod:`.launch` or torchrun; a rank's part in :mod:`.rank`, its communication in
:mod:`.comm` and :mod:`.transport`).

Who runs a task is its provider (:data:`cosched.codegen.plan.PROVIDERS`): on CPU by default
onnxruntime, one session per segment of a stream (:mod:`cosched.execution.ort`); otherwise
cosched's torch kernels, traced per task on CPU (:mod:`cosched.execution.traced`). How speed is
measured: :mod:`cosched.isolated` (each runner alone in a fresh process).

Layering: imports :mod:`cosched.codegen` (plans), :mod:`cosched.execution` (tasks) and
:mod:`cosched.ir`; never the search or the cost model: it runs plans, it does not know
schedules.
"""

from __future__ import annotations

from cosched.execution.bindings import random_inputs
from cosched.runtime.sequential import SequentialExecutor

__all__ = ["SequentialExecutor", "random_inputs"]
