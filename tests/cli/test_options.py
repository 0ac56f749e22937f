"""Shared model options of the CLI verbs: --batch, --shape, and shapes from concrete inputs."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from cosched.cli.options import add_model_options, parse_model_options, shapes_from_inputs
from cosched.errors import ConfigError


def _parse(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    return parse_model_options(parser.parse_args(["a.onnx", *argv]))


def test_defaults_leave_dims_to_the_models() -> None:
    assert _parse() == {"batch": None, "input_shapes": None}


def test_one_batch_for_all_tenants() -> None:
    assert _parse("--batch", "4")["batch"] == 4


def test_batch_per_tenant_and_shapes() -> None:
    options = _parse("--batch", "bert=2", "--batch", "dlrm=8", "--shape", "bert:input_ids=2x128",
                     "--shape", "bert:attention_mask=2X128")  # fmt: skip
    assert options["batch"] == {"bert": 2, "dlrm": 8}
    assert options["input_shapes"] == {"bert": {"input_ids": (2, 128), "attention_mask": (2, 128)}}


def test_input_names_may_hold_colons() -> None:
    assert _parse("--shape", "tf:input:0=1x3")["input_shapes"] == {"tf": {"input:0": (1, 3)}}


@pytest.mark.parametrize(
    ("argv", "quoted"),
    [
        (["--batch", "four"], "'four'"),
        (["--batch", "0"], "'0'"),
        (["--batch", "=3"], "'=3'"),
        (["--batch", "bert=2", "--batch", "bert=3"], "'bert=3'"),
        (["--batch", "2", "--batch", "bert=3"], "not both"),
        (["--batch", "2", "--batch", "3"], "more than one"),
        (["--shape", "bert=1x128"], "'bert=1x128'"),
        (["--shape", "bert:ids=1by128"], "'1by128'"),
        (["--shape", "bert:ids=1x-2"], "'bert:ids=1x-2'"),
        (["--shape", "b:i=1", "--shape", "b:i=2"], "twice"),
    ],
)
def test_malformed_values_are_config_errors_quoting_the_value(argv: list[str], quoted: str) -> None:
    with pytest.raises(ConfigError, match=quoted):
        _parse(*argv)


def test_shapes_from_concrete_inputs() -> None:
    inputs = {"bert": {"ids": np.zeros((2, 16), np.int64)}, "cnn": {"x": np.zeros((1, 3, 8, 8), np.float32)}}
    assert shapes_from_inputs(inputs) == {"bert": {"ids": (2, 16)}, "cnn": {"x": (1, 3, 8, 8)}}
