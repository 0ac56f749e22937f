"""Starting the ranks of a multi-device plan through torch's elastic launcher, and reporting a failure.

``launch(plan_dir, ...)`` does what ``torchrun --nproc-per-node N -m
cosched.runtime.distributed PLAN_DIR ...`` does (the same agent,
``torch.distributed.launcher.elastic_launch``, one process per device of the plan, a c10d
rendezvous on this host, no restarts), with a private run directory for the inputs, each
rank's progress and rank 0's result. It returns rank 0's report and every tenant's outputs.

Before starting anything it checks what it can see from here: the plan loads (models and
shards by sha256), a CUDA plan's GPUs exist, a port given with ``port`` is free. When a rank
fails, the agent stops every other rank (SIGTERM, then SIGKILL) and :func:`launch` raises one
:class:`RuntimeFailure`: the first rank that failed of its own (killed by a signal, or an
error that is not a lost peer), with the task it was running (from its error, or for a rank
killed without a word from its progress file), and what the other ranks said.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cosched.codegen.plan import Plan, load_plan
from cosched.errors import ConfigError, DeviceError, RuntimeFailure
from cosched.runtime.distributed import STARTUP_S

__all__ = ["check_gpus", "check_port", "launch"]

#: What a rank's error says when another rank went away first (ours, then gloo's and NCCL's).
LOST_PEER = ("peer rank is gone", "did not answer", "Connection closed by peer", "Connection reset",
             "Timed out", "timed out")
#: The agent's own loggers; quiet unless something is wrong (their lines repeat our error).
AGENT_LOGGERS = ("torch.distributed.elastic", "torch.distributed.launcher")


def launch(plan_dir: str | Path, *, inputs: Mapping[str, Mapping[str, Any]] | None = None,
           args: Sequence[str] = (), timeout_s: float = 60.0, port: int | None = None,
           plan: Plan | None = None) -> dict[str, Any]:
    """Run the multi-device plan in ``plan_dir`` on one process per device (see the module
    docstring). ``inputs`` (tenant -> name -> array) are every rank's inputs (default: the
    ranks' seeded random inputs); ``args`` are more options of
    ``python -m cosched.runtime.distributed`` (``--iters``, ``--compare sequential``, ...).
    ``plan`` is the plan of ``plan_dir`` when the caller has loaded it already.
    Returns ``{"report": ..., "outputs": ...}``."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    plan = plan if plan is not None else load_plan(plan_dir)
    if not plan.devices:
        raise ConfigError(f"{plan_dir}: a one-device plan runs in this process (cosched.load(...).run()), "
                          "not on torch.distributed")
    check_gpus(plan, str(plan_dir))
    chosen = 0 if port is None else check_port(port)
    run_dir = Path(tempfile.mkdtemp(prefix="cosched-run-"))
    try:
        if inputs is not None:
            with open(run_dir / "feed.pkl", "wb") as f:
                pickle.dump({t: dict(v) for t, v in inputs.items()}, f)
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=len(plan.devices), run_id=f"cosched-{uuid.uuid4().hex[:12]}",
            rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{chosen}", rdzv_configs={"timeout": int(max(timeout_s, STARTUP_S))},
            max_restarts=0, monitor_interval=0.1, start_method="spawn",
            logs_specs=DefaultLogsSpecs(log_dir=str(run_dir / "logs")),
        )
        argv = ["-m", "cosched.runtime.distributed", str(plan_dir), "--run-dir", str(run_dir),
                "--timeout", f"{timeout_s:g}", *args]
        with _quiet_agent():
            try:
                elastic_launch(config, sys.executable)(*argv)
            except ChildFailedError as exc:
                raise RuntimeFailure(describe_failure(plan, exc.failures, run_dir)) from None
            except Exception as exc:  # the agent itself: rendezvous, port, spawning
                raise DeviceError(f"could not start the {len(plan.devices)} ranks of {plan_dir} "
                                  f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})") from None
        result = run_dir / "result.pkl"
        if not result.is_file():
            raise RuntimeFailure(f"the ranks of {plan_dir} ended without rank 0's report")
        with open(result, "rb") as f:
            return pickle.load(f)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def check_gpus(plan: Plan, where: str) -> None:
    """:class:`DeviceError` if a CUDA plan names a GPU this machine does not have."""
    if plan.device_kind != "cuda":
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    need = max(d.index for d in plan.devices) + 1
    if count < need:
        raise DeviceError(f"{where}: the plan runs on {', '.join(d.label for d in plan.devices)}, but this machine "
                          f"has {count} CUDA device(s); compile for the devices it has")


def check_port(port: int) -> int:
    """``port`` if a rendezvous can listen on it here; else :class:`ConfigError`."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ConfigError(f"port {port} is in use on 127.0.0.1 ({exc.strerror}); give another with --port, "
                              "or leave it out to take a free one") from None
    return port


def describe_failure(plan: Plan, failures: Mapping[int, Any], run_dir: Path) -> str:
    """One message for the failed ranks (see the module docstring)."""
    from cosched.runtime.distributed import read_progress

    def said(f: Any) -> str:
        message = f.message
        if isinstance(message, dict):
            message = message.get("message", "")
        return " ".join(str(message or "").split())

    def own(rank: int) -> tuple[int, int, float]:
        f = failures[rank]
        if f.exitcode is not None and f.exitcode < 0 and f.exitcode != -signal.SIGTERM:
            return (0, 0, f.timestamp)  # killed from outside: the cause
        lost = any(sign in said(f) for sign in LOST_PEER)
        terminated = f.exitcode == -signal.SIGTERM and not said(f).startswith("rank ")
        return (1 + int(lost) + 2 * int(terminated), 0, f.timestamp)

    def progress(rank: int) -> str:
        stream_ids = [s.id for s in plan.streams if s.device == rank]
        started = [(sid, t) for sid, t in zip(stream_ids, read_progress(run_dir, rank), strict=False) if t is not None]
        tasks = ", ".join(f"stream {sid}: task {t} ({_task_label(plan, t)})" for sid, t in started)
        return f"last started {tasks}" if tasks else "no task started"

    root = min(failures, key=own)
    f = failures[root]
    label = plan.devices[root].label if root < len(plan.devices) else "?"
    if f.exitcode is not None and f.exitcode < 0 and not said(f).startswith("rank "):
        name = signal.Signals(-f.exitcode).name if -f.exitcode in signal.valid_signals() else str(-f.exitcode)
        text = f"rank {root} ({label}) was killed by {name} ({progress(root)})"
    else:
        text = said(f) or f"rank {root} ({label}) exited with code {f.exitcode}"
    others = []
    for rank in sorted(failures):
        if rank == root:
            continue
        g = failures[rank]
        if g.exitcode == -signal.SIGTERM and not said(g).startswith("rank "):
            others.append(f"rank {rank} stopped by the launcher ({progress(rank)})")
        else:
            others.append(said(g) or f"rank {rank} exited with code {g.exitcode}")
    tail = f"; then {'; '.join(others)}" if others else ""
    return f"the distributed run failed: {text}{tail}"


def _task_label(plan: Plan, task: int) -> str:
    try:
        spec = plan.task_spec(task)
    except Exception:
        return "?"
    return f"{spec.tenant}:{spec.name or spec.ops[0]}"


class _quiet_agent:
    """Raise the agent's loggers to ERROR+ for the launch (their warnings repeat our error)."""

    def __enter__(self) -> None:
        self.levels = {n: logging.getLogger(n).level for n in AGENT_LOGGERS}
        for n in AGENT_LOGGERS:
            logging.getLogger(n).setLevel(logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        for n, level in self.levels.items():
            logging.getLogger(n).setLevel(level)
