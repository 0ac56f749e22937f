"""The registry is filled however cosched.ops is first imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cosched

CHECK = "from cosched.ops.registry import lookup, supported_ops\nprint(lookup('Relu', 13).__name__, len(supported_ops()))"


@pytest.mark.parametrize("first", [
    "cosched.ops.registry",
    "cosched.ops.implementations.common",
    "cosched.ops.implementations.activations",
])  # fmt: skip
def test_registry_is_filled_whichever_module_is_imported_first(first: str) -> None:
    root = Path(cosched.__file__).parents[1]
    code = f"import sys\nsys.path.insert(0, {str(root)!r})\nimport {first}\n{CHECK}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    name, count = done.stdout.split()
    assert name == "relu" and int(count) > 100, done.stdout
