"""Held-out accuracy of the cost models, split by task signature.

The signatures are shuffled (seeded) and a fraction is held out: the training set keeps the
standalone profiles of the other signatures and the co-run groups made only of them; the test
set is every held-out standalone profile and every co-run member whose own signature is held
out. A test shape was therefore never seen in training, alone or in a group.

Metrics (MAPE as a fraction, 0.1 = 10 %; Spearman rank correlation), every one on the
held-out signatures only:

- ``standalone_*``: XGBoost standalone latency against the measured one;
  ``roofline_standalone_*`` the roofline's;
- ``corun_*``: the model end to end, co-run member latency predicted as *predicted*
  standalone x predicted slowdown (what the search sees for a graph never profiled);
  ``roofline_corun_*``: the roofline's standalone x the roofline's slowdown;
  ``no_interference_corun_*``: co-run latency taken as the *measured* standalone latency
  (a perfect standalone model that ignores interference);
  ``no_interference_predicted_corun_mape``: taken as the XGBoost standalone prediction;
- ``corun_measured_standalone_*``: *measured* standalone x predicted slowdown (what the
  search sees for a profiled graph); its MAPE equals the MAPE of the predicted slowdown
  against the measured ratio co-run / standalone, also reported as ``slowdown_mape``, next
  to ``roofline_slowdown_mape`` and ``no_interference_slowdown_mape`` (slowdown 1);
- ``measured_slowdown_median``: the median measured co-run / standalone ratio of the test
  members (a sanity figure: well below 1 means the two measurements disagree in method).

:func:`evaluate_on` reports the same metrics for a model trained elsewhere (on the profiles
of other models) on *every* record of another store, without fitting: how the model
transfers to models it never saw.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

import numpy as np

from cosched.costmodel.features import CORUN_FEATURES, task_demand_from_features
from cosched.costmodel.store import ProfileData
from cosched.costmodel.xgb import XGBoostModel, corun_rows
from cosched.errors import CostModelError

__all__ = ["evaluate", "evaluate_on", "mape", "spearman", "split_by_signature"]


def mape(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean absolute percentage error as a fraction (0.1 = 10 %)."""
    predicted, actual = np.asarray(predicted, float), np.asarray(actual, float)
    return float(np.mean(np.abs(predicted - actual) / actual)) if len(actual) else math.nan


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):  # average the ranks of ties
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (NaN for fewer than 2 points or a constant side)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def split_by_signature(data: ProfileData, test_fraction: float = 0.25,
                       seed: int = 0) -> tuple[ProfileData, ProfileData, frozenset[str]]:
    """(train, test, held-out signatures), as the module doc describes.

    The test set keeps every standalone profile (a held-out member's co-runners need theirs
    for its features) and the groups that hold a held-out signature.
    """
    if not 0 < test_fraction < 1:
        raise CostModelError(f"`0 < test_fraction < 1` must hold, but got test_fraction={test_fraction}")
    signatures = sorted(data.standalone)
    random.Random(seed).shuffle(signatures)
    n_test = max(1, round(len(signatures) * test_fraction))
    held_out = frozenset(signatures[:n_test])
    train = replace(
        data,
        standalone={s: r for s, r in data.standalone.items() if s not in held_out},
        groups=tuple(g for g in data.groups if not held_out.intersection(g.signatures)),
    )
    test = replace(data, groups=tuple(g for g in data.groups if held_out.intersection(g.signatures)))
    return train, test, held_out


def evaluate(data: ProfileData, test_fraction: float = 0.25, seed: int = 0,
             model: XGBoostModel | None = None) -> dict[str, Any]:
    """Fit on the training split and report the module doc's metrics on the held-out one."""
    train, test, test_sigs = split_by_signature(data, test_fraction, seed)
    model = (model or XGBoostModel(data.device)).fit(train)
    metrics = _metrics(model, test, test_sigs, "held-out signature")
    return {"samples": data.samples, "train_signatures": len(train.standalone), **metrics}


def evaluate_on(model: XGBoostModel, data: ProfileData) -> dict[str, Any]:
    """The module doc's metrics of a fitted ``model`` on every record of ``data`` (no fit)."""
    if not data.standalone:
        raise CostModelError(f"no standalone profile of device {data.device.name} to evaluate on")
    metrics = _metrics(model, data, frozenset(data.standalone), "signature with a standalone profile")
    return {"samples": data.samples, **metrics}


def _metrics(model: XGBoostModel, test: ProfileData, test_sigs: frozenset[str],
             what: str) -> dict[str, Any]:
    """Standalone metrics on ``test_sigs``; co-run ones on the members of those signatures."""
    device = test.device
    alone = [test.standalone[s] for s in sorted(test_sigs)]
    actual = np.array([r.median_ms for r in alone])
    predicted = model.predict_standalone_features([r.features for r in alone])
    roof = np.array([task_demand_from_features(r.features, device).time_s * 1e3 for r in alone])

    # the features see predicted standalone latencies, as when compiling a graph never profiled
    every = sorted(test.standalone)
    predicted_ms = dict(zip(every, model.predict_standalone_features(
        [test.standalone[s].features for s in every]).tolist(), strict=True))
    rows = corun_rows(test, only=test_sigs, alone_ms=predicted_ms)
    if not rows:
        raise CostModelError(
            f"no co-run group holds a {what} whose members all have standalone profiles "
            f"({len(test_sigs)} of {len(test.standalone)} signatures, {len(test.groups)} groups); "
            "profile more co-run groups"
        )
    measured = np.array([r[1] for r in rows])
    measured_alone = np.array([r[2] for r in rows])
    vectors = np.array([r[0] for r in rows])
    slow = model.predict_slowdown_vectors(vectors)
    own_feats = [test.standalone[sig].features for sig in _member_signatures(test, test_sigs)]
    pred_alone = model.predict_standalone_features(own_feats)
    roof_alone = np.array([task_demand_from_features(f, device).time_s * 1e3 for f in own_feats])
    roof_slow = vectors[:, _index("roof_slowdown")]
    return {
        "test_signatures": len(test_sigs), "test_corun_members": len(rows),
        "standalone_mape": mape(predicted, actual), "standalone_spearman": spearman(predicted, actual),
        "roofline_standalone_mape": mape(roof, actual),
        "roofline_standalone_spearman": spearman(roof, actual),
        "corun_mape": mape(pred_alone * slow, measured),
        "corun_spearman": spearman(pred_alone * slow, measured),
        "roofline_corun_mape": mape(roof_alone * roof_slow, measured),
        "roofline_corun_spearman": spearman(roof_alone * roof_slow, measured),
        "no_interference_corun_mape": mape(measured_alone, measured),
        "no_interference_corun_spearman": spearman(measured_alone, measured),
        "no_interference_predicted_corun_mape": mape(pred_alone, measured),
        "corun_measured_standalone_mape": mape(measured_alone * slow, measured),
        "corun_measured_standalone_spearman": spearman(measured_alone * slow, measured),
        "slowdown_mape": mape(slow, measured / measured_alone),
        "slowdown_spearman": spearman(slow, measured / measured_alone),
        "measured_slowdown_median": float(np.median(measured / measured_alone)),
        "roofline_slowdown_mape": mape(roof_slow, measured / measured_alone),
        "no_interference_slowdown_mape": mape(np.ones(len(rows)), measured / measured_alone),
    }


def _member_signatures(data: ProfileData, only: frozenset[str]) -> list[str]:
    """The signatures of the members :func:`corun_rows` yields for ``only``, in its order."""
    return [
        sig for g in data.groups for i, sig in enumerate(g.signatures)
        if sig in only and all(s in data.standalone for s in g.signatures)
    ]


def _index(name: str) -> int:
    return CORUN_FEATURES.index(name)
