"""One-device plans stay schema version 1, byte for byte as the code before version 2 wrote them."""

from __future__ import annotations

from pathlib import Path

import pytest
from v1_cases import CASES, write_case

from cosched.codegen import load_plan

GOLDEN = Path(__file__).parent / "data" / "v1"


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_device_plan_is_written_as_before(case: str, tmp_path: Path) -> None:
    out = write_case(case, tmp_path)
    for file in ("plan.json", "plan_module.py"):
        want = (GOLDEN / case / file).read_text(encoding="utf-8")
        assert (out / file).read_text(encoding="utf-8") == want, f"{case}/{file} differs from the v1 golden copy"
    assert sorted(p.name for p in out.iterdir()) == ["models", "plan.json", "plan_module.py"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_stored_v1_plan_loads(case: str, tmp_path: Path) -> None:
    out = write_case(case, tmp_path)
    (out / "plan.json").write_text((GOLDEN / case / "plan.json").read_text(encoding="utf-8"), encoding="utf-8")
    plan = load_plan(out)
    assert plan.schema_version == 1 and plan.devices == () and plan.comms == () and plan.splits == ()
