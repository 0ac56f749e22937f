"""Fixtures for the importer tests: saving inline models, cached zoo exports."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest


@pytest.fixture
def save(tmp_path: Path) -> Callable[[onnx.ModelProto, str], Path]:
    """Write a model to ``tmp_path / filename`` and return the path."""

    def _save(model: onnx.ModelProto, filename: str) -> Path:
        path = tmp_path / filename
        onnx.save(model, path)
        return path

    return _save


@pytest.fixture(scope="session")
def zoo_export() -> Callable[..., Path]:
    """``cosched.zoo.export`` through the shared on-disk cache (exports once per machine)."""
    from cosched import zoo

    return zoo.export
