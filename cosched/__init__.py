"""cosched: an ahead-of-time compiler for multi-tenant DNN inference."""

from __future__ import annotations

from cosched.errors import CoschedError

__all__ = ["CoschedError", "__version__"]

__version__ = "0.1.0"
