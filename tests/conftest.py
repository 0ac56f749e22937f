"""Suite-wide options: ``--device cuda`` runs the device-parametrised runtime tests on a GPU."""

from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", choices=("cpu", "cuda"), default="cpu",
                     help="device for the tests that take the run_device fixture (default cpu)")


@pytest.fixture
def run_device(request: pytest.FixtureRequest) -> str:
    """The device of ``--device``; on CUDA, TF32 is off so outputs compare at float32 tolerance."""
    device = str(request.config.getoption("--device"))
    if device == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("--device cuda, but torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device
