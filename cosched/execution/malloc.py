"""Keep freed memory in the process, so CPU runs do not page-fault their tensors back in.

glibc's malloc serves a request above its mmap threshold (128 KiB at start, raised only
when such a chunk is freed) with a fresh ``mmap`` and returns it to the OS on ``free``; it
also trims the heap's free top above the trim threshold. A CPU plan allocates and frees
the same activation tensors every run, so each run page-faults them in again: the `mixed`
zoo mix took 238,000 minor page faults and 536 ms per sequential run in a fresh process,
against none and 268 ms with the settings below (2-core Xeon). ``MALLOC_TOP_PAD_`` alone,
which glibc reads only at process start, did not help: the tensors came from ``mmap``.

:func:`keep_freed_memory` sets, through ``mallopt``, the mmap threshold to glibc's maximum
(32 MiB on 64-bit), the trim threshold to 1 GiB and the top pad to 512 MiB: the process
keeps up to that much freed memory for reuse instead of returning it. Executors call it
on CPU unless told not to (``keep_freed_memory=False``); it does nothing on other C
libraries and reports whether it applied.

What is kept is whatever was ever freed, not only what the runs reuse. Building an executor
frees far more than a run: the weights read from the model before their tensor copies, and
the example runs of every traced task (:mod:`cosched.execution.traced`). Those come from the
heap, and each trace's small long-lived objects land between them, so the freed blocks stay
resident: tracing a CPU rank's tasks of full-size zoo models left 314 MiB resident beside
its 325 MiB of (memory-mapped) weights, and a one-device executor of full bert held 830 MiB
for 418 MiB of weights, traced or not. :func:`release_freed_memory` (glibc's
``malloc_trim(0)``, which also hands back free pages inside the heap) returns it; executors
call it once they are built, and the runs then keep only what they use (that rank: 716 MiB
resident after its rounds before, 410 MiB after; the traced executor: 830 MiB, then 445 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

__all__ = ["keep_freed_memory", "release_freed_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30
TOP_PAD = 512 << 20
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Tune glibc malloc as the module docstring says (once per process); True if applied."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if platform.libc_ver()[0] != "glibc":
        log.debug("malloc tuning skipped: not glibc (%s)", platform.libc_ver())
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = all(libc.mallopt(param, value) == 1 for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD)))
    except (OSError, AttributeError) as exc:
        log.debug("malloc tuning skipped: %s", exc)
        return False
    _applied = ok
    log.debug("malloc tuning %s: mmap threshold %d, trim threshold %d, top pad %d",
              "applied" if ok else "refused", MMAP_THRESHOLD, TRIM_THRESHOLD, TOP_PAD)
    return ok


def release_freed_memory() -> bool:
    """Return the memory malloc holds free to the OS (glibc's ``malloc_trim(0)``: every
    arena, free pages inside the heap too), as the module docstring says; True if glibc
    released any. Live allocations are untouched; a later allocation page-faults in anew."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError) as exc:
        log.debug("malloc trim skipped: %s", exc)
        return False
