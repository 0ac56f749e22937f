from __future__ import annotations

import pytest
from search_helpers import make_table

from cosched.errors import ScheduleError
from cosched.search.schedule import Schedule

# Tenant a: 0 -> 1; tenant b: 2 -> 3.
ROWS = [("a", []), ("a", [0]), ("b", []), ("b", [2])]


def graph():
    return make_table(ROWS, [1.0, 1.0, 1.0, 1.0]).graph


def test_valid_schedule_passes_and_chains():
    s = Schedule.single([[0, 1], [2, 3]], "manual")
    assert s.validate(graph()) is s
    assert s.stream_of() == {0: (0, 0), 1: (0, 0), 2: (0, 1), 3: (0, 1)}


def test_cross_stream_dependency_in_order_is_valid():
    Schedule.single([[0, 3], [2, 1]]).validate(graph())


def test_missing_task_is_named():
    with pytest.raises(ScheduleError, match=r"does not run tasks 3 \(b/task3\)"):
        Schedule.single([[0, 1], [2]]).validate(graph())


def test_duplicate_task_is_named():
    with pytest.raises(ScheduleError, match=r"task 1 \(a/task1\) is listed twice"):
        Schedule.single([[0, 1], [2, 3, 1]]).validate(graph())


def test_unknown_task_is_named():
    with pytest.raises(ScheduleError, match="lists task 7"):
        Schedule.single([[0, 1, 7], [2, 3]]).validate(graph())


def test_dependency_order_violation_names_both_tasks():
    with pytest.raises(ScheduleError, match=r"task 1 at position 0 before task 0 .* depends on task 0"):
        Schedule.single([[1, 0], [2, 3]]).validate(graph())


def test_cross_stream_deadlock_names_the_cycle():
    # Stream 0 runs 1 then 2, stream 1 runs 3 then 0: 1 waits for 0, which waits behind 3,
    # which waits for 2, which waits behind 1.
    with pytest.raises(ScheduleError, match="deadlocks") as info:
        Schedule.single([[1, 2], [3, 0]]).validate(graph())
    for t in ("task 0", "task 1", "task 2", "task 3"):
        assert t in str(info.value)


def test_json_round_trip():
    s = Schedule.single([[0, 1], [2, 3]], "greedy", knobs={"streams": 2})
    back = Schedule.from_dict(s.to_dict())
    assert back == s
    assert back.meta["knobs"] == {"streams": 2}


def test_from_dict_rejects_other_version():
    with pytest.raises(ScheduleError, match="schedule_version 99"):
        Schedule.from_dict({"schedule_version": 99, "devices": []})


def test_streams_of_multi_device_schedule_is_an_error():
    s = Schedule((((0, 1),), ((2, 3),)), "two devices")
    with pytest.raises(ScheduleError, match="spans 2 devices"):
        _ = s.streams
