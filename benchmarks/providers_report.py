"""Summarising and printing the records of ``python -m benchmarks.providers``.

House rule: on CPU only ratios are printed (absolute times from a shared machine mean
little); the JSON keeps the medians in ms.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["by_signature", "format_markdown", "summarise"]

Record = Mapping[str, Any]
COMPILED = ("frozen", "freeze-only", "inductor", "inductor-freeze", "ort-task")


def summarise(records: Sequence[Record], models: Sequence[str], variants: Sequence[str]) -> dict[str, Any]:
    """Per model, each variant's medians, ratios, build costs and fallbacks, and its time per
    op-type signature; then the signatures over all models (:func:`by_signature`)."""
    out: dict[str, Any] = {}
    for model in models:
        mine = {v: [r for r in records if r["model"] == model and r["variant"] == v] for v in variants}
        summary = {v: _variant(rs) for v, rs in mine.items() if rs}
        for s in summary.values():
            for ref in ("traced", "ort-model"):
                if "median_ms" in s and "median_ms" in summary.get(ref, {}):
                    s[f"vs_{ref}"] = s["median_ms"] / summary[ref]["median_ms"]
        out[model] = {"variants": summary, "signatures": _signatures(mine)}
    return {"models": out, "by_signature": by_signature(out)}


def _variant(records: Sequence[Record]) -> dict[str, Any]:
    first = min(records, key=lambda r: r["repeat"])
    if first["status"] != "ok":
        return {k: v for k, v in first.items() if k not in ("model", "variant")}
    medians = [statistics.median(r["times_ms"]) for r in records]
    median = statistics.median(medians)
    warm = [r for r in records if r["repeat"] > 0]
    return {
        "status": "ok", "median_ms": median, "repeat_medians_ms": medians,
        "spread": (max(medians) - min(medians)) / median,
        "steps_ms": sum(statistics.median(r["task_ms"][k] for r in records) for k in first["task_ms"]),
        "tasks": first["tasks"], "build_s_cold": first["build_s"],
        "build_s_warm": statistics.median(r["build_s"] for r in warm) if warm else None,
        "compile_s_cold": sum(first["compile_s"].values()),
        "compile_s_warm": statistics.median(sum(r["compile_s"].values()) for r in warm) if warm else None,
        "fallbacks": len(first["fallbacks"]), "fallback_reasons": dict(Counter(first["fallbacks"].values())),
        "agrees": all(r["agrees"] for r in records), "max_rel_error": max(r["max_rel_error"] for r in records),
        "notes": first["notes"],
    }


def _signatures(mine: Mapping[str, Sequence[Record]]) -> dict[str, dict[str, Any]]:
    """Op-type signature -> its task count and, per variant, the sum of its tasks' median ms."""
    out: dict[str, dict[str, Any]] = {}
    for variant, records in mine.items():
        ok = [r for r in records if r["status"] == "ok" and r["task_ms"]]
        if not ok:
            continue
        for label, signature in ok[0]["signatures"].items():
            entry = out.setdefault(signature, {"tasks": 0, "ms": {}, "labels": set()})
            entry["labels"].add(label)
            ms = statistics.median(r["task_ms"][label] for r in ok)
            entry["ms"][variant] = entry["ms"].get(variant, 0.0) + ms
    for entry in out.values():
        entry["tasks"] = len(entry.pop("labels"))
    return out


def by_signature(models: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each signature over all models: task count, ms per variant (summed over the models;
    a variant that some model with the signature did not time is left out), fastest variant."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for model in models.values():
        for signature, entry in model["signatures"].items():
            groups.setdefault(signature, []).append(entry)
    out: dict[str, dict[str, Any]] = {}
    for signature, entries in groups.items():
        variants = set.intersection(*(set(e["ms"]) for e in entries))
        ms = {v: sum(e["ms"][v] for e in entries) for v in sorted(variants)}
        out[signature] = {"tasks": sum(e["tasks"] for e in entries), "models": len(entries), "ms": ms,
                          "best": min(ms, key=ms.__getitem__) if ms else None}
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["ms"].get("traced", 0.0)))


# ---------------------------------------------------------------------------- markdown
def _cell(s: Mapping[str, Any] | None, key: str) -> str:
    if s is None:
        return "-"
    if s.get("status") == "over-budget":
        return f"over budget ({s['extrapolated_compile_s']:.0f} s est.)"
    if s.get("status") != "ok":
        return "error"
    if key not in s:
        return "-"
    flag = "" if s["agrees"] else " DIFFERS"
    return f"{s[key]:.2f} ±{s['spread']:.0%}{flag}"


def _model_tables(result: Mapping[str, Any], variants: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for key, title in (("vs_traced", "Model time / traced"), ("vs_ort-model", "Model time / ort-model")):
        lines += [f"**{title}** (median over repeats; ± is the spread over repeats; < 1 is faster)", "",
                  "| model | tasks | " + " | ".join(variants) + " |", "|---|---:|" + "---:|" * len(variants)]
        for model, entry in result["models"].items():
            tasks = entry["variants"].get("traced", {}).get("tasks", "-")
            cells = [_cell(entry["variants"].get(v), key) for v in variants]
            lines.append(f"| {model} | {tasks} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _build_table(result: Mapping[str, Any], variants: Sequence[str]) -> list[str]:
    shown = [v for v in ("traced", *COMPILED) if v in variants]
    lines = ["**Build time per model** in s, cold (first repeat; Inductor with an empty cache) / warm "
             "(later repeats, median); in parentheses tasks that fell back to traced (for traced: "
             "ran op by op)", "", "| model | " + " | ".join(shown) + " |", "|---|" + "---:|" * len(shown)]
    for model, entry in result["models"].items():
        cells = []
        for v in shown:
            s = entry["variants"].get(v)
            if s is None or s.get("status") == "error":
                cells.append("-" if s is None else "error")
            elif s["status"] == "over-budget":
                cells.append(f"> {s['compile_s']:.0f} ({s['compiled_tasks']}/{s['tasks']} tasks; "
                             f"~{s['extrapolated_compile_s']:.0f} est.)")
            else:
                warm = f"{s['build_s_warm']:.1f}" if s["build_s_warm"] is not None else "-"
                cells.append(f"{s['build_s_cold']:.1f} / {warm} ({s['fallbacks']})")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _signature_rows(sigs: Mapping[str, Any], variants: Sequence[str], total: float, prefix: str) -> list[str]:
    rows = []
    for signature, entry in sigs.items():
        traced = entry["ms"].get("traced")
        if not traced:
            continue
        ratios = [f"{entry['ms'][v] / traced:.2f}" if v in entry["ms"] else "-" for v in variants]
        best = min(entry["ms"], key=entry["ms"].get)
        rows.append(f"| {prefix}{signature} | {entry['tasks']} | {traced / total:.0%} | " + " | ".join(ratios)
                    + f" | {best} |")
    return rows


def _signature_tables(result: Mapping[str, Any], variants: Sequence[str]) -> list[str]:
    shown = [v for v in variants if v != "ort-model"]
    head = "| {} | tasks | share of traced | " + " | ".join(shown) + " | fastest |"
    rule = "|---|---:|---:|" + "---:|" * len(shown) + "---|"
    overall = result["by_signature"]
    total = sum(e["ms"].get("traced", 0.0) for e in overall.values()) or 1.0
    lines = ["**Per op type, all models**: tasks grouped by op-type signature; time of the group / its "
             "traced time (sum over tasks of each task's median)", "", head.format("op types"), rule,
             *_signature_rows(overall, shown, total, ""), "",
             "**Per op type and model** (groups of at least 2% of the model's traced task time)", "",
             head.format("model: op types"), rule]
    for model, entry in result["models"].items():
        sigs = entry["signatures"]
        model_total = sum(e["ms"].get("traced", 0.0) for e in sigs.values()) or 1.0
        big = {k: e for k, e in sorted(sigs.items(), key=lambda kv: -kv[1]["ms"].get("traced", 0.0))
               if e["ms"].get("traced", 0.0) >= 0.02 * model_total}
        lines += _signature_rows(big, shown, model_total, f"{model}: ")
    return [*lines, ""]


def _notes(result: Mapping[str, Any]) -> list[str]:
    lines = ["**Fallbacks and compile notes**", ""]
    for model, entry in result["models"].items():
        for variant, s in entry["variants"].items():
            if s.get("status") == "error":
                lines.append(f"- {model} {variant}: error: {s['error'].strip().splitlines()[-1][:300]}")
            for reason, count in s.get("fallback_reasons", {}).items():
                lines.append(f"- {model} {variant}: {count} task(s): {reason}")
            if s.get("notes"):
                lines.append(f"- {model} {variant}: {s['notes']}")
    lines += ["", "**No C++ compiler** (tiny squeezenet1_1, every task compiled with Inductor)", ""]
    for probe in result["no_compiler"]:
        if "error" in probe:
            lines.append(f"- {probe['mode']}: probe failed: {probe['error'][-300:]}")
            continue
        for label in ("default", "suppress_errors"):
            p = probe[label]
            lines.append(f"- {probe['mode']}, {label}: {p['fallbacks']}/{probe['tasks']} tasks fell back "
                         f"({p['build_s']:.1f} s to build); reasons {p['reasons']}; outputs' relative error "
                         f"{p['rel_error']:.0e}")
        lines.append(f"  (stderr lines naming InvalidCxxCompiler: {probe['stderr_lines_naming_the_error']})")
    return [*lines, ""]


def format_markdown(result: Mapping[str, Any]) -> str:
    variants = list(dict.fromkeys(v for m in result["models"].values() for v in m["variants"]))
    before, after = result["load_before"], result["load_after"]
    lines = [f"### Running a task on CPU: {', '.join(variants)} ({result['size']}, batch 1, one intra-op thread)",
             "", f"Command: `{result['command']}`; machine: {result['machine']}; {result['versions']}; "
             f"date {result['date']}; {result['repeats']} repeats, each model x variant alone in a fresh "
             f"process, >= {result['iters']} runs and {result['min_time_s']} s after {result['warmup']} warm-up; "
             f"load average before {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f}, after "
             f"{after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f}; wall {result['wall_s'] / 60:.0f} min.", ""]
    lines += _model_tables(result, variants)
    lines += _build_table(result, variants)
    lines += _signature_tables(result, variants)
    lines += _notes(result)
    return "\n".join(lines)
