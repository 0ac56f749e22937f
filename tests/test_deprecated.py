"""Renamed public modules keep working for one release, each with a DeprecationWarning
(renamed attributes are tested beside their class: tests/test_api.py)."""

from __future__ import annotations

import importlib
import sys

import pytest

import cosched.onnx_backend


def test_cosched_backend_warns_and_is_the_onnx_backend() -> None:
    sys.modules.pop("cosched.backend", None)
    with pytest.warns(DeprecationWarning, match="cosched.onnx_backend"):
        old = importlib.import_module("cosched.backend")
    assert old.prepare is cosched.onnx_backend.prepare
    assert old.run_node is cosched.onnx_backend.run_node

