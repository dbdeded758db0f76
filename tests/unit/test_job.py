"""The Job controller's index arithmetic, against upstream's status.completedIndexes format."""

from __future__ import annotations

from edgekube.controllers import job


def test_completed_indexes_format_as_upstream() -> None:
    merged = job.merge_indexes(job.parse_indexes("0,1,4-6", 10), [2, 8, 9, 5])
    assert merged == [(0, 2), (4, 6), (8, 9)]
    assert job.format_indexes(merged) == "0-2,4-6,8,9"  # two neighbours are "8,9", not "8-9"
    assert job.format_indexes(job.merge_indexes([], [3])) == "3"
    assert job.format_indexes([]) == ""


def test_parsed_indexes_stop_at_completions() -> None:
    # a shrunk Indexed Job (completions is mutable for Indexed Jobs) drops indexes past the end
    assert job.parse_indexes("0-3,7,9-12", 10) == [(0, 3), (7, 7), (9, 9)]
    assert job.parse_indexes("0-3,7", 3) == [(0, 2)]
    assert job.parse_indexes("x,2", 5) == [(2, 2)]  # a corrupt part is skipped


def test_generated_pod_names_leave_room_for_the_suffix() -> None:
    assert job.pod_generate_name("pi") == "pi-"
    assert job.pod_generate_name("pi", 3) == "pi-3-"
    long = "j" * 63
    assert job.pod_generate_name(long) == "j" * 57 + "-"
    assert job.pod_generate_name(long, 12) == "j" * 54 + "-12-"
