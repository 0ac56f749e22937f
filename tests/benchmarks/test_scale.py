"""benchmarks.scale: the mix it writes (never timings)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from benchmarks.scale import ARCHITECTURES, write_mix
from cosched.ir import fuse, load_models


@pytest.mark.slow
def test_mix_cycles_deepened_architectures_under_distinct_names(tmp_path: Path) -> None:
    paths = write_mix(tmp_path, 7)
    assert [p.stem for p in paths] == [f"{ARCHITECTURES[i % 5]}_{i}" for i in range(7)]
    assert paths[5].read_bytes() == paths[0].read_bytes()  # a copy of the same architecture
    ops = [len(onnx.load(p, load_external_data=False).graph.node) for p in paths[:5]]
    assert all(100 <= n <= 250 for n in ops), ops  # "about 150 ops each"
    graph = fuse(load_models(paths))
    assert graph.tenant_names == tuple(p.stem for p in paths)
    assert write_mix(tmp_path, 7) == paths  # written once, then reused
