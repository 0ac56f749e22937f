"""Printing a harness result, and writing it into BENCHMARKS.md.

The harness owns one section per mix and device kind, between the markers
``<!-- bench:run:MIX:DEVICE -->`` and ``<!-- /bench:run:MIX:DEVICE -->``; everything outside
its sections (other people's text) is kept byte for byte. Inside a section, each run is a
block headed ``#### DATE · MACHINE``; a new run replaces the block with the same date and
machine, and is appended otherwise.

House rule: on CPU only ratios are written (absolute times from a shared machine mean
little); on CUDA the medians in ms are added.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["format_block", "format_table", "machine", "update_section", "write_markdown"]

TITLE = "# Benchmarks\n"
_ORDER = ("plan", "sequential", "sequential-1-thread", "stream-per-tenant", "ort-sequential", "ort-threads", "cuda-graph-per-model")


def machine(result: Mapping[str, Any]) -> str:
    """The machine in words: CPU model and cores, plus the GPU on CUDA."""
    device = result["device"]
    text = f"{device['cpu']}, {device['cores']} cores"
    return f"{device['gpu']} ({text})" if device.get("gpu") else text


def _runner_names(result: Mapping[str, Any]) -> list[str]:
    names = list(result["runners"])
    return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def format_table(result: Mapping[str, Any]) -> str:
    """A plain-text table for the terminal: ms, spread, ratios, predicted ms and agreement."""
    lines = [
        f"mix {result['mix']} ({', '.join(result['models'])}; {result['size']}, batch {result['batch']}) "
        f"on {machine(result)}",
        f"plan: {result['tasks']} tasks on {result['streams']} streams, cost model {result['cost_model']}, "
        f"{result['trials']} trials, compiled in {result['compile_s']:.1f} s; "
        f"{result['iters']} interleaved rounds after {result['warmup']} warm-up",
        "",
        f"{'runner':22s} {'median ms':>10s} {'spread':>7s} {'seq/runner':>11s} {'runner/plan':>12s} "
        f"{'predicted ms':>13s} {'max rel err':>12s}  agrees",
    ]
    for name in _runner_names(result):
        r, check = result["runners"][name], result["outputs"][name]
        fid = result["fidelity"].get(name)
        predicted = f"{fid['predicted_ms']:13.2f}" if fid else f"{'-':>13s}"
        lines.append(
            f"{name:22s} {r['median_ms']:10.2f} {r['spread']:7.2f} {r['sequential_over_runner']:11.2f} "
            f"{r['runner_over_plan']:12.2f} {predicted} {check['max_rel_err']:12.1e}  "
            f"{'yes' if check['agrees'] else 'NO ' + '; '.join(check['problems'])}"
        )
    for name, reason in result["skipped"].items():
        lines.append(f"{name:22s} skipped: {reason}")
    return "\n".join(lines)


def format_block(result: Mapping[str, Any]) -> str:
    """The markdown block of one run: header, command, context line and the runner table."""
    gpu = result["device"]["kind"] == "cuda"
    versions = result["versions"]
    worst = max(c["max_rel_err"] for c in result["outputs"].values())
    fid = result["fidelity"].get("plan")
    fidelity = f"{fid['predicted_over_measured']:.2f}" if fid else "n/a"
    lines = [
        f"#### {result['date']} · {machine(result)}",
        "",
        f"`{result['command']}`",
        "",
        f"torch {versions['torch']}, onnxruntime {versions['onnxruntime']}, Python {versions['python']}; "
        f"{result['iters']} interleaved rounds after {result['warmup']} warm-up; plan: {result['tasks']} "
        f"tasks on {result['streams']} streams, cost model {result['cost_model']}, {result['trials']} "
        f"trials; plan predicted / measured time: {fidelity}; outputs agree with op-by-op sequential execution (rel. "
        f"error <= 1e-4): {'yes' if result['outputs_agree'] else 'NO'} (worst {worst:.1e}); "
        f"1-min load average before / after timing: {_load(result)}.",
        "",
    ]
    header = ["runner", "t(sequential) / t(runner)", "t(runner) / t(plan)", "spread (IQR / median)",
              "predicted / measured"]
    if gpu:
        header += ["median ms", "predicted ms"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in _runner_names(result):
        r = result["runners"][name]
        f = result["fidelity"].get(name)
        cells = [name, f"{r['sequential_over_runner']:.2f}", f"{r['runner_over_plan']:.2f}",
                 f"{r['spread']:.2f}", f"{f['predicted_over_measured']:.2f}" if f else "-"]
        if gpu:
            cells += [f"{r['median_ms']:.3f}", f"{f['predicted_ms']:.3f}" if f else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"| {name} | skipped: {reason} |" for name, reason in result["skipped"].items()]
    return "\n".join(lines) + "\n"


def _load(result: Mapping[str, Any]) -> str:
    return " / ".join("?" if v is None else f"{v:.2f}" for v in result.get("loadavg_1min", [None, None]))


def update_section(text: str, mix: str, device: str, block: str) -> str:
    """``text`` with ``block`` placed in the section of ``mix`` on ``device``; nothing else changes."""
    begin, end = f"<!-- bench:run:{mix}:{device} -->", f"<!-- /bench:run:{mix}:{device} -->"
    header = block.splitlines()[0]
    pattern = re.compile(re.escape(begin) + r"\n(.*?)" + re.escape(end), re.S)
    found = pattern.search(text)
    if found is None:
        intro = (f"### `{mix}` mix on {device}\n\nWritten by `python -m benchmarks.run`; ratios of "
                 "median times measured side by side in one process.\n")
        section = f"{begin}\n{intro}\n{block}{end}\n"
        return (text.rstrip("\n") + "\n\n" if text.strip() else TITLE + "\n") + section
    body = found.group(1)
    parts = re.split(r"(?m)^(?=#### )", body)
    intro, blocks = parts[0], [p for p in parts[1:] if p.splitlines()[0] != header]
    blocks = [b if b.endswith("\n\n") else b.rstrip("\n") + "\n\n" for b in blocks]
    new_body = intro + "".join(blocks) + block
    return text[:found.start(1)] + new_body + text[found.end(1):]


def write_markdown(result: Mapping[str, Any], path: Path) -> Path:
    """Put this run's block into its section of ``path`` (created if missing)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    updated = update_section(text, result["mix"], result["device"]["kind"], format_block(result))
    path.write_text(updated, encoding="utf-8")
    return path
