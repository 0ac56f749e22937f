"""Simulated speedup over sequential of the searched plan and of each baseline, on zoo mixes.

Run: ``python benchmarks/search_zoo.py``. It uses the cached ``auto`` cost model when there
is one (and never profiles) and the roofline model, and prints markdown rows for
BENCHMARKS.md: t(sequential) / t(schedule) as the simulator predicts it.
"""

from __future__ import annotations

import cosched
from cosched import zoo

MIXES = {
    "tiny": (("resnet50", "bert", "mobilenet_v2", "dlrm"), "tiny"),
    "vision": (("resnet50", "inception_v3", "mobilenet_v2", "squeezenet1_1"), "full"),
    "mixed": (("resnet50", "inception_v3", "mobilenet_v2", "squeezenet1_1", "bert", "dlrm"), "full"),
}


def main() -> None:
    print("| mix | cost model | tasks | plan | stream per tenant | greedy | plan violations |")
    print("|---|---|---|---|---|---|---|")
    for cost_model in ("roofline", "auto"):
        for mix, (names, size) in MIXES.items():
            paths = [zoo.export(n, size=size) for n in names]
            plan = cosched.compile(paths, names=list(names), cost_model=cost_model, trials=40,
                                   profile_budget_s=0)
            report = plan.report()
            ms = report["predicted_ms"]
            seq = ms["sequential"]
            print(f"| {mix} | {plan.cost_model} | {report['tasks']} | {seq / ms['plan']:.2f} | "
                  f"{seq / ms['stream_per_tenant']:.2f} | {seq / ms['greedy']:.2f} | "
                  f"{report['interference_violations']} |")


if __name__ == "__main__":
    main()
