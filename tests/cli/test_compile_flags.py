"""`cosched compile`'s flags -> one CompileOptions: the same defaults, and errors that name the flag."""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest

from cosched.cli import build_parser
from cosched.cli.compile import FLAGS, options_from_args
from cosched.errors import ConfigError
from cosched.options import DEFAULTS, option_names


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["compile", "a.onnx", "-o", "plan", *argv])


def test_flag_defaults_are_the_option_defaults() -> None:
    # the CLI names tenants after the file stems and shows progress unless -q
    assert options_from_args(_args()) == replace(DEFAULTS, names=["a"], progress=True)
    quiet = build_parser().parse_args(["-q", "compile", "a.onnx", "-o", "plan"])
    assert options_from_args(quiet) == replace(DEFAULTS, names=["a"])


def test_flags_set_their_options() -> None:
    args = _args("--trials", "7", "--time-budget", "2.5", "--profile-budget", "0", "--seed", "3", "--slo", "a=5",
                 "--objective", "pareto", "--max-streams", "2", "--interference-threshold", "inf", "--best-effort",
                 "--provider", "torch", "--no-in-situ", "--measure", "--study", "sqlite:///s.db", "--batch", "2")
    assert options_from_args(args) == replace(
        DEFAULTS, names=["a"], batch=2, trials=7, time_budget_s=2.5, profile_budget_s=0.0, seed=3, slo_ms={"a": 5.0},
        objective="pareto", max_streams=2, interference_threshold=float("inf"), best_effort=True, provider="torch",
        in_situ=False, measure=True, study="sqlite:///s.db", progress=True,
    )


def test_every_flag_of_the_table_exists() -> None:
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {s for p in (parser, verbs.choices["compile"]) for a in p._actions for s in a.option_strings}
    assert set(FLAGS) == set(option_names())
    assert set(FLAGS.values()) <= flags


@pytest.mark.parametrize(
    ("argv", "message", "python_name"),
    [
        (["--trials", "-1"], "--trials must be >= 0, got -1", None),
        (["--max-streams", "0"], "--max-streams must be >= 1, got 0", "max_streams"),
        (["--time-budget", "0"], "--time-budget must be a finite number of seconds > 0", "time_budget_s"),
        (["--time-budget", "nan"], "--time-budget must be a finite number of seconds > 0", "time_budget_s"),
        (["--profile-budget", "-1"], "--profile-budget must be a finite number of seconds >= 0", "profile_budget_s"),
        (["--interference-threshold", "0.5"], "--interference-threshold must be a number >= 1.0", "interference_threshold"),
        (["--slo", "a=inf"], "--slo a=inf must be a finite number > 0 ms, got inf", "slo_ms"),
        (["--slo", " a = 0"], "--slo  a = 0 must be a finite number > 0 ms, got 0.0", "slo_ms"),
        (["--objective", "pareto"], "--objective 'pareto' needs at least one tenant SLO to search makespan against (--slo)", "slo_ms"),
    ],
)
def test_a_bad_flag_is_an_error_naming_the_flag(argv: list[str], message: str, python_name: str | None) -> None:
    with pytest.raises(ConfigError) as caught:
        options_from_args(_args(*argv))
    assert str(caught.value).startswith(message)
    assert python_name is None or python_name not in str(caught.value)
