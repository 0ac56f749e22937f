"""Running one task, or one segment of tasks, on a device: the layer below both stages that
execute the graph's tasks.

The profiler (:mod:`cosched.costmodel`) must time tasks exactly as the executors
(:mod:`cosched.runtime`) run them, so both stand on this package, and it imports neither:

- :mod:`~cosched.execution.kernels`: op kernels prepared for a device, constants loaded once;
- :mod:`~cosched.execution.traced`: a task's kernels traced into one TorchScript callable (CPU);
- :mod:`~cosched.execution.ort`: a segment of tasks as one onnxruntime session (CPU);
- :mod:`~cosched.execution.bindings`: user inputs bound to graph tensors and outputs collected;
- :mod:`~cosched.execution.malloc`: glibc malloc kept from trimming in hot loops.

Layering: this package imports :mod:`cosched.ir`, :mod:`cosched.ops` and :mod:`cosched.errors`
only (checked by ``tests/test_layering.py``).
"""
