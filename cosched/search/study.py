"""Persisted Optuna studies, named by what their trials' values depend on.

A stored trial holds decoder knobs and the makespan (and SLO ratios) they simulated to, for
one graph under one cost model and one objective. Resumed for anything else, those values
would steer the sampler with the numbers of another problem, and the stored best trials
would be picked by them. So a study in ``SearchConfig.storage`` is named
``cosched-search-<key>``, the key hashing three parts:

- ``graph``: the tenants, and per task its id, tenant, signature (op types, shapes, dtypes,
  attributes), analysed cost and predecessor tasks;
- ``cost_model``: :meth:`CostModel.identity` (kind, device, trained boosters) and the launch
  overhead the table adds;
- ``predictions``: the model's standalone latencies of these tasks, so that even a model
  without an identity of its own is told apart when it predicts differently;
- ``objective``: single or multi-objective, the SLOs and the interference threshold (they
  define the stored values and constraints).

Budgets (trials, time limit, seed, stream count) are left out: running again with more
trials is what resuming is for. The same compilation therefore resumes its study, and a
different graph, cost model or objective (or predictions) starts a new study beside the old ones in the same
file (an INFO log line says which happened and why), which stay as they are. The parts are
stored as the study's ``cosched_key`` user attribute and checked on resume, so a study
given an explicit name (``SearchConfig.study_name``) that was made for something else is
refused with :class:`~cosched.errors.ConfigError` rather than resumed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import optuna
import sqlalchemy.exc

from cosched.costmodel.features import task_signature
from cosched.errors import ConfigError
from cosched.search.costtable import CostTable

__all__ = ["KEY_ATTR", "PREFIX", "Direction", "open_study", "study_key", "study_name"]

log = logging.getLogger(__name__)

#: Prefix of every study name cosched derives; the user attribute holding the key parts.
PREFIX = "cosched-search"
KEY_ATTR = "cosched_key"

Direction = Literal["minimize", "maximize"]

_PARTS = ("graph", "cost_model", "predictions", "objective")


def _digest(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def study_key(table: CostTable, objective: Mapping[str, Any]) -> dict[str, str]:
    """The hashed parts of the module doc, for ``table`` and the search's ``objective``."""
    graph = table.graph
    tasks = []
    for task, preds in zip(graph.tasks, table.preds, strict=True):
        cost = graph.task_cost(task)
        tasks.append([task.id, task.tenant, task_signature(graph, task), list(preds),
                      [cost.flops, cost.bytes_read, cost.bytes_written, cost.param_bytes]])
    model = {"identity": table.model.identity(), "launch_overhead_ms": table.launch_overhead_ms,
             "runtime": table.runtime.to_json()}
    return {
        "graph": _digest({"tenants": list(table.tenants), "tasks": tasks}),
        "cost_model": _digest(model),
        "predictions": _digest([float(x) for x in table.latency]),
        "objective": _digest(dict(objective)),
    }


def study_name(key: Mapping[str, str]) -> str:
    """``cosched-search-`` and 16 hex digits of the whole key."""
    return f"{PREFIX}-{_digest(dict(key))}"


def open_study(
    table: CostTable, storage: str, objective: Mapping[str, Any], name: str | None,
    sampler: optuna.samplers.BaseSampler, directions: Sequence[Direction],
) -> optuna.Study:
    """Resume the study of ``table`` and ``objective`` in ``storage``, or start it.

    ``name`` ``None`` derives the name from the key; a given name is used as is, and a
    stored study of that name made for another key (or by a cosched that kept none) is
    refused.
    """
    key = study_key(table, objective)
    name = name or study_name(key)
    summaries = _summaries(storage)
    existing = summaries.get(name)
    if existing is not None and existing.user_attrs.get(KEY_ATTR) != key:
        raise ConfigError(
            f"Optuna study {name!r} in {storage} is not this compilation's: it has "
            f"{_differences(existing.user_attrs.get(KEY_ATTR), key)}; expected a study of the "
            "same graph, cost model and objective (leave the study name unset to get one keyed "
            "by them, or choose another name or storage)"
        )
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    directions=list(directions), load_if_exists=True)
    except (ValueError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise _storage_error(storage, exc) from exc
    if existing is not None:
        log.info("search: resuming study %r in %s (%d trials so far; same graph, cost model "
                 "and objective)", name, storage, len(study.trials))
        return study
    study.set_user_attr(KEY_ATTR, key)
    others = [
        f"{other!r} ({_differences(summary.user_attrs.get(KEY_ATTR), key)})"
        for other, summary in sorted(summaries.items()) if other.startswith(PREFIX)
    ]
    log.info("search: new study %r in %s for this graph, cost model and objective%s", name, storage,
             f"; not resuming {', '.join(others)}" if others else "")
    return study


def _summaries(storage: str) -> dict[str, optuna.study.StudySummary]:
    try:
        found = optuna.get_all_study_summaries(storage, include_best_trial=False)
    except (ValueError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise _storage_error(storage, exc) from exc
    return {s.study_name: s for s in found}


def _differences(stored: object, key: Mapping[str, str]) -> str:
    """What a stored key differs in from ``key``, in words ("another graph and objective")."""
    if not isinstance(stored, Mapping) or set(stored) != set(_PARTS):
        return "no cosched key: an older cosched or another program made it"
    differ = [part for part in _PARTS if stored[part] != key[part]]
    if "graph" in differ or "cost_model" in differ:  # then the predictions differ as a matter of course
        differ = [part for part in differ if part != "predictions"]
    if not differ:
        return "the same graph, cost model and objective under another name"
    words = {"cost_model": "cost model", "predictions": "cost model predictions"}
    return "another " + " and ".join(words.get(part, part) for part in differ)


def _storage_error(storage: str, exc: Exception) -> ConfigError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError(
        f"cannot open the Optuna study storage {storage!r}: {first}; expected a storage URL "
        "such as sqlite:///FILE.db whose folder exists"
    )
