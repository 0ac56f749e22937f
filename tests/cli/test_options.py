"""Shared model options of the CLI verbs: --batch, --shape, and shapes from concrete inputs."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from cosched.cli.options import add_model_options, parse_model_options, shapes_from_inputs
from cosched.errors import ConfigError

MODELS = ["a.onnx", "b.onnx", "bert.onnx", "dlrm.onnx", "tf.onnx"]


def _parse(*argv: str, models: list[str] = MODELS) -> dict:
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    return parse_model_options(parser.parse_args([*models, *argv]))


def test_defaults_leave_dims_to_the_models() -> None:
    assert _parse() == {"names": ["a", "b", "bert", "dlrm", "tf"], "batch": None, "input_shapes": None}


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


def test_name_renames_the_tenants_in_model_order() -> None:
    options = _parse("--name", "x", "--name", "y", "--batch", "y=2", models=["m.onnx", "m2.onnx"])
    assert options["names"] == ["x", "y"] and options["batch"] == {"y": 2}


@pytest.mark.parametrize(
    ("models", "argv", "culprit"),
    [
        (["a=b.onnx"], [], "'a=b'"),
        (["r:1.onnx"], [], "'r:1'"),
        (["m.onnx"], ["--name", "q=1"], "'q=1'"),
        (["d1/m.onnx", "d2/m.onnx"], [], "'m' is used twice"),
        (["m.onnx", "n.onnx"], ["--name", "x"], "one --name per model"),
    ],
)
def test_tenant_names_that_flags_cannot_address_are_refused_with_a_hint(
    models: list[str], argv: list[str], culprit: str
) -> None:
    with pytest.raises(ConfigError, match=culprit) as caught:
        _parse(*argv, models=models)
    assert "--name" in str(caught.value)
    assert "names=" not in str(caught.value)  # the CLI's words, not the Python API's


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["--batch", "gpt=2"], "--batch gpt="),
        (["--shape", "gpt:x=1x2"], "'gpt:x=1x2'"),
    ],
)
def test_flags_naming_unknown_tenants_say_the_flag(argv: list[str], culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit) as caught:
        _parse(*argv)
    assert "'gpt'" in str(caught.value) and "bert" in str(caught.value)
    assert "input_shapes" not in str(caught.value)


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["--shape", "a:x=0x4"], ">= 1"),
        (["--shape", "a:x=1x0"], ">= 1"),
        (["--batch", "99999999999999999999999"], "2\\*\\*63 - 1"),
        (["--shape", "a:x=99999999999999999999999x4"], "2\\*\\*63 - 1"),
    ],
)
def test_zero_and_impossible_dims_are_refused_like_a_zero_batch(argv: list[str], culprit: str) -> None:
    with pytest.raises(ConfigError, match=culprit):
        _parse(*argv)
