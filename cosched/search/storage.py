"""Checking an Optuna storage URL (``--study`` / ``study=``) before any search work.

A study persists to a SQLAlchemy database URL, in practice ``sqlite:///FILE.db``. What
SQLAlchemy and Optuna say about a bad one is a traceback deep in their engines; this
module says which part of the URL is wrong instead.
"""

from __future__ import annotations

from pathlib import Path

from cosched.errors import ConfigError

__all__ = ["check_storage"]

SQLITE_HEADER = b"SQLite format 3\x00"
EXAMPLE = "sqlite:///search.db"


def check_storage(url: object) -> None:
    """Raise :class:`ConfigError` unless ``url`` is a storage URL a study can be kept in:
    a SQLAlchemy database URL; for SQLite, a database file (existing, empty, or new in an
    existing directory), not a directory or a file of another kind."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"study storage must be a database URL such as {EXAMPLE}, got {url!r}")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"study storage {url!r} is not a database URL; expected e.g. {EXAMPLE}") from None
    if parsed.get_backend_name() != "sqlite":
        _check_driver(url)
        return
    if parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if path.is_dir():
        raise ConfigError(f"study storage {url!r}: {path} is a directory; name a database file in it, "
                          f"e.g. sqlite:///{path / 'search.db'}")
    if path.exists():
        try:
            with path.open("rb") as f:
                header = f.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise ConfigError(f"study storage {url!r}: {path} cannot be read ({exc.strerror})") from None
        if header and header != SQLITE_HEADER:
            raise ConfigError(f"study storage {url!r}: {path} exists and is not an SQLite database")
    elif not path.parent.is_dir():
        raise ConfigError(f"study storage {url!r}: directory {path.parent} does not exist")


def _check_driver(url: str) -> None:
    """A non-SQLite URL needs its database driver installed; creating an engine imports it
    (and connects to nothing)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        create_engine(url).dispose()
    except (ImportError, NoSuchModuleError, ArgumentError, ValueError) as exc:
        raise ConfigError(f"study storage {url!r}: its database driver is not available ({exc}); "
                          f"install it, or use {EXAMPLE}") from None
