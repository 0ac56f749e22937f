"""Errors raised by cosched.

Every error a user can cause is a :class:`CoschedError` subclass whose message names the
object at fault (file, tenant, op, tensor), what was expected and what was found, and the
fix where one is known. The CLI prints such errors as one line and exits with code 2.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CoschedError",
    "CostModelError",
    "DeviceError",
    "GraphError",
    "InputError",
    "ModelLoadError",
    "OptionError",
    "PlanError",
    "ProfileError",
    "QueueFull",
    "RuntimeFailure",
    "SLOError",
    "ScheduleError",
    "ServeError",
    "ServerClosed",
    "ShapeError",
    "UnsupportedOpError",
]


class CoschedError(Exception):
    """Base class of every error cosched raises on purpose."""


class ConfigError(CoschedError):
    """An option or argument is invalid: duplicate tenant names, a bad batch, a bad flag."""


class OptionError(ConfigError):
    """A compile option out of range (see :class:`cosched.CompileOptions`). ``option`` names it
    (``key``: the tenant, for a per-tenant option), ``problem`` says the rest of the message and
    ``see`` names another option the fix involves, so that a front end can word the message in
    its own terms (:meth:`worded`), as the CLI names flags."""

    def __init__(self, option: str, problem: str, key: str | None = None, see: str | None = None) -> None:
        self.option, self.problem, self.key, self.see = option, problem, key, see
        super().__init__(self.worded(option if key is None else f"{option}[{key!r}]", see))

    def worded(self, subject: str, see: str | None = None) -> str:
        """The message, calling the option ``subject`` and the other option it involves ``see``."""
        return f"{subject} {self.problem}" + (f" ({see})" if see else "")

    def __reduce__(self) -> tuple[type[OptionError], tuple[str, str, str | None, str | None]]:
        return type(self), (self.option, self.problem, self.key, self.see)


class ModelLoadError(CoschedError):
    """A model file cannot be read: missing, truncated, not ONNX, or failing onnx.checker."""


class UnsupportedOpError(CoschedError):
    """An op (or op domain, opset, dtype) that cosched does not implement."""


class ShapeError(CoschedError):
    """A tensor whose shape or dtype cannot be made fully static, or is inconsistent."""


class GraphError(CoschedError):
    """A structurally broken graph: a cycle, an undefined tensor, a missing initializer."""


class InputError(CoschedError):
    """Runtime inputs that are missing, extra, or of the wrong shape or dtype."""


class DeviceError(CoschedError):
    """A device that is absent or unusable, or a plan made for another device."""


class ProfileError(CoschedError):
    """Profiling or the profile store failed: a bad store file, an empty budget."""


class CostModelError(CoschedError):
    """A cost model that cannot be trained, saved or loaded."""


class ScheduleError(CoschedError):
    """An invalid schedule: a task missing or repeated, an order that breaks a dependency."""


class SLOError(CoschedError):
    """A latency objective that no schedule found can meet."""


class PlanError(CoschedError):
    """A plan that fails schema validation, hash checks or dependency-order proofs."""


class RuntimeFailure(CoschedError):
    """Execution of a plan failed: a worker or rank raised or timed out."""


class ServeError(CoschedError):
    """A request a server (:mod:`cosched.runtime.serve`) did not run: refused or cancelled."""


class QueueFull(ServeError):
    """A request rejected because its tenant's queue already holds as many requests as the
    server's ``queue_size`` allows (backpressure: submit slower or raise ``queue_size``)."""


class ServerClosed(ServeError):
    """A request submitted after ``close()``, or still queued when ``close()`` cancelled it."""
