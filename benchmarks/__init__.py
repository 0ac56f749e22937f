"""Benchmarks of cosched against its baselines and peers.

``python -m benchmarks.run`` is the side-by-side harness (writes BENCHMARKS.md sections);
``benchmarks/search_gap.py`` and ``benchmarks/search_scaling.py`` measure the search itself.
"""
