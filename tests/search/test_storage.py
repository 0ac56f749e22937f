"""Study storage URLs are checked before any search work, naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosched.errors import ConfigError
from cosched.search.optimizer import SearchConfig
from cosched.search.storage import check_storage


def test_good_urls_pass(tmp_path: Path) -> None:
    check_storage(f"sqlite:///{tmp_path / 'new.db'}")
    (tmp_path / "empty.db").write_bytes(b"")
    check_storage(f"sqlite:///{tmp_path / 'empty.db'}")
    check_storage("sqlite:///:memory:")


@pytest.mark.parametrize(
    ("url", "culprit"),
    [
        ("", "must be a database URL"),
        (None, "must be a database URL"),
        ("search.db", "is not a database URL"),
        ("sqlite:///{dir}", "is a directory"),
        ("sqlite:///{dir}/notes.txt", "not an SQLite database"),
        ("sqlite:///{dir}/missing/s.db", "does not exist"),
        ("nosuchdb://host/db", "driver is not available"),
    ],
)
def test_bad_urls_are_config_errors_naming_the_url(tmp_path: Path, url: str | None, culprit: str) -> None:
    (tmp_path / "notes.txt").write_text("not a database")
    given = url.format(dir=tmp_path) if url else url
    with pytest.raises(ConfigError, match=culprit) as caught:
        check_storage(given)
    if given:
        assert repr(given) in str(caught.value)


def test_search_config_checks_its_storage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        SearchConfig(storage=f"sqlite:///{tmp_path}")
