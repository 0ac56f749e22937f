"""Benchmarks of cosched against its baselines and peers.

``python -m benchmarks.run`` is the side-by-side harness (writes BENCHMARKS.md sections);
``python -m benchmarks.providers`` compares ways of running a task on CPU (TorchScript, frozen,
Inductor, onnxruntime); ``benchmarks/search_gap.py`` and ``benchmarks/search_scaling.py`` measure the search itself.
"""
