"""CompileOptions: one checked value for compile()'s options, mapped once to the search's config."""

from __future__ import annotations

import math
from typing import Any

import pytest

from cosched.errors import ConfigError, OptionError
from cosched.options import DEFAULTS, PROVIDER_CHOICES, CompileOptions
from cosched.search import SearchConfig


@pytest.mark.parametrize(
    ("kwargs", "option", "message"),
    [
        ({"trials": -1}, "trials", "trials must be >= 0, got -1"),
        ({"trials": 2.0}, "trials", "trials must be an integer"),
        ({"seed": True}, "seed", "seed must be an integer"),
        ({"max_streams": 0}, "max_streams", "max_streams must be >= 1, got 0"),
        ({"time_budget_s": math.nan}, "time_budget_s", "time_budget_s must be a finite number of seconds > 0"),
        ({"time_budget_s": math.inf}, "time_budget_s", "time_budget_s must be a finite number of seconds > 0"),
        ({"profile_budget_s": -1}, "profile_budget_s", "profile_budget_s must be a finite number of seconds >= 0"),
        ({"interference_threshold": 0.5}, "interference_threshold", "interference_threshold must be a number >= 1.0"),
        ({"slo_ms": {"bert": 0}}, "slo_ms", "slo_ms['bert'] must be a finite number > 0 ms, got 0"),
        ({"slo_ms": [("bert", 5)]}, "slo_ms", "slo_ms must map tenant -> milliseconds"),
        ({"objective": "latency"}, "objective", "objective must be 'makespan' or 'pareto', got 'latency'"),
        ({"objective": "pareto"}, "objective", "objective 'pareto' needs at least one tenant SLO to search makespan against (slo_ms)"),
        ({"provider": "tvm"}, "provider", "provider must be 'auto', 'torch', 'ort', got 'tvm'"),
        ({"device": 0}, "device", "device must be 'cpu', 'cuda' or 'cuda:<i>', got 0"),
        ({"cost_model": 3}, "cost_model", "cost_model must be 'auto', 'roofline', a directory or a CostModel"),
    ],
)
def test_a_bad_option_is_an_error_naming_it(kwargs: dict[str, Any], option: str, message: str) -> None:
    with pytest.raises(OptionError) as caught:
        CompileOptions(**kwargs)
    assert caught.value.option == option
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ConfigError)


def test_defaults_are_the_search_defaults() -> None:
    from cosched.codegen.plan import PROVIDERS

    assert CompileOptions() == DEFAULTS
    assert SearchConfig() == DEFAULTS.search_config()
    assert ("auto", *PROVIDERS) == PROVIDER_CHOICES


def test_search_config_maps_every_search_option() -> None:
    options = CompileOptions(trials=7, time_budget_s=3.5, seed=2, max_streams=3, interference_threshold=math.inf,
                             slo_ms={"a": 5.0}, best_effort=True, objective="pareto", progress=True)
    assert options.search_config() == SearchConfig(
        trials=7, timeout_s=3.5, seed=2, max_streams=3, threshold=math.inf, slo_ms={"a": 5.0}, best_effort=True,
        multi_objective=True, progress=True,
    )


def test_slos_are_held_as_a_read_only_copy() -> None:
    slos = {"a": 5.0}
    options = CompileOptions(slo_ms=slos)
    slos["b"] = 1.0
    assert dict(options.slo_ms) == {"a": 5.0}
    with pytest.raises(TypeError):
        options.slo_ms["c"] = 2.0  # type: ignore[index]
    assert dict(CompileOptions(slo_ms=None).slo_ms) == {}  # type: ignore[arg-type]  # as compile() always took it


def test_updated_checks_like_new_options_and_refuses_unknown_names() -> None:
    options = CompileOptions(trials=5)
    assert options.updated(seed=3) == CompileOptions(trials=5, seed=3)
    assert options.updated() is options
    with pytest.raises(OptionError, match="max_streams"):
        options.updated(max_streams=0)
    with pytest.raises(ConfigError, match=r"unknown compile option\(s\) \['trails'\].*'trials'"):
        options.updated(trails=3)


def test_an_option_error_can_be_worded_for_a_front_end_and_survives_pickling() -> None:
    import pickle

    with pytest.raises(OptionError) as caught:
        CompileOptions(slo_ms={"a": -1.0})
    error = caught.value
    assert (error.option, error.key, error.problem) == ("slo_ms", "a", "must be a finite number > 0 ms, got -1.0")
    assert error.worded("--slo a=-1") == "--slo a=-1 must be a finite number > 0 ms, got -1.0"
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.key, again.see) == (str(error), "a", None)
