"""Every zoo test session exports into its own temporary cache directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cosched.zoo import CACHE_ENV


@pytest.fixture(scope="session", autouse=True)
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("zoo-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(directory))
        yield directory
