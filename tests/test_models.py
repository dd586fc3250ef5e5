"""The job state machine and duration helpers of orchestrator.models (no I/O)."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from orchestrator.errors import IllegalTransitionError, UsageError
from orchestrator.models import (
    ACTIVE,
    BUCKETS,
    HAS_RESULT,
    ON_WORKER,
    TERMINAL,
    TRANSITIONS,
    UNFINISHED,
    JobState,
    check_transition,
    format_duration,
    parse_duration,
    sources_for,
)

S = JobState
ALL_STATES = list(JobState)
LEGAL = sorted(((src, dst) for src, dsts in TRANSITIONS.items() for dst in dsts),
               key=lambda p: (p[0].value, p[1].value))
ILLEGAL = [(src, dst) for src, dst in itertools.product(ALL_STATES, ALL_STATES)
           if dst not in TRANSITIONS[src]]


def _ids(pairs: list[tuple[JobState, JobState]]) -> list[str]:
    return [f"{a.value}->{b.value}" for a, b in pairs]


# ---- the transition table ---------------------------------------------------------


def test_every_state_has_a_row_in_transitions() -> None:
    assert set(TRANSITIONS) == set(JobState)
    for src, targets in TRANSITIONS.items():
        assert isinstance(targets, frozenset), src
        assert targets <= set(JobState), src


def test_every_state_lands_in_exactly_one_bucket() -> None:
    for state in JobState:
        holders = [name for name, members in BUCKETS.items() if state in members]
        assert len(holders) == 1, f"{state.value} is in buckets {holders}"
    # and the buckets hold nothing but job states
    assert set().union(*BUCKETS.values()) == set(JobState)


def test_the_table_matches_the_design() -> None:
    """The life in DESIGN.md, spelled out, so an accidental edit of the table shows."""
    assert {
        S.QUEUED: {S.ASSIGNED, S.CANCELLED},
        S.ASSIGNED: {S.RUNNING, S.SUCCEEDED, S.FAILED, S.LOST, S.CANCELLED},
        S.RUNNING: {S.SUCCEEDED, S.FAILED, S.LOST, S.CANCELLED},
        S.SUCCEEDED: {S.PULLED, S.QUEUED},  # QUEUED: `orch retry` (discards the result)
        S.PULLED: {S.QUEUED},  # `orch retry`
        S.FAILED: {S.QUEUED},
        S.LOST: {S.QUEUED},
        S.CANCELLED: {S.QUEUED},
    } == TRANSITIONS


def test_no_self_transitions() -> None:
    for state in JobState:
        assert state not in TRANSITIONS[state]


def test_every_state_is_reachable_from_queued() -> None:
    seen, todo = {S.QUEUED}, deque([S.QUEUED])
    while todo:
        for nxt in TRANSITIONS[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(JobState)


def test_final_states_only_leave_by_explicit_retry() -> None:
    for state in TERMINAL:
        assert TRANSITIONS[state] <= {S.QUEUED}, state
    assert not TERMINAL & UNFINISHED


def test_state_groups_are_named_once_and_consistent() -> None:
    assert set(JobState) == UNFINISHED | TERMINAL
    assert ON_WORKER < ACTIVE < UNFINISHED
    assert {S.SUCCEEDED, S.PULLED} == HAS_RESULT
    assert {S.SUCCEEDED} == UNFINISHED - ACTIVE


@pytest.mark.parametrize(("src", "dst"), LEGAL, ids=_ids(LEGAL))
def test_legal_transition_passes(src: JobState, dst: JobState) -> None:
    check_transition(src, dst)  # must not raise
    assert src in sources_for(dst)


def test_illegal_pairs_are_the_complement_of_legal_ones() -> None:
    assert len(LEGAL) + len(ILLEGAL) == len(ALL_STATES) ** 2
    assert not set(LEGAL) & set(ILLEGAL)


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=_ids(ILLEGAL))
def test_illegal_transition_raises(src: JobState, dst: JobState) -> None:
    with pytest.raises(IllegalTransitionError) as info:
        check_transition(src, dst)
    assert src.value in str(info.value) and dst.value in str(info.value)
    assert src not in sources_for(dst)


def test_sources_for_inverts_the_table() -> None:
    for dst in JobState:
        assert sources_for(dst) == {s for s in JobState if dst in TRANSITIONS[s]}
    assert sources_for(S.QUEUED) == {S.FAILED, S.LOST, S.CANCELLED, S.SUCCEEDED, S.PULLED}
    assert sources_for(S.PULLED) == {S.SUCCEEDED}


def test_job_state_is_a_string_enum() -> None:
    assert JobState("QUEUED") is S.QUEUED
    assert S.RUNNING == "RUNNING"
    with pytest.raises(ValueError):
        JobState("queued")


# ---- durations ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("40m", 2400.0),
    ("1h30m", 5400.0),
    ("90", 90.0),
    ("2.5s", 2.5),
    ("0", 0.0),
    ("250ms", 0.25),
    ("1d", 86400.0),
    ("2h", 7200.0),
    ("1h 30m", 5400.0),
    ("  45s  ", 45.0),
    ("1H30M", 5400.0),
    ("1m30s", 90.0),
    ("1.5h", 5400.0),
])
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "", "   ", "soon", "10q", "m", "h30", "-5", "1.5.5", "5 minutes", "1e3", "inf", "nan",
    "40m!", "1h-30m", "s40", "1,5h",
])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_duration(text, "--estimate")
    assert "--estimate" in str(info.value)
    assert repr(text) in str(info.value)


def test_parse_duration_accepts_numbers() -> None:
    assert parse_duration(12) == 12.0  # type: ignore[arg-type]
    assert parse_duration(1.5) == 1.5  # type: ignore[arg-type]


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"),
    (0, "0s"),
    (0.4, "0s"),
    (59, "59s"),
    (59.6, "1m00s"),
    (60, "1m00s"),
    (90, "1m30s"),
    (3599, "59m59s"),
    (3600, "1h00m"),
    (3725, "1h02m"),
    (86400, "24h00m"),
])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [5, 75, 2400, 5400, 7260])
def test_format_then_parse_round_trips_to_the_shown_precision(seconds: int) -> None:
    shown = format_duration(seconds)
    back = parse_duration(shown)
    precision = 60 if seconds >= 3600 else 1
    assert abs(back - seconds) < precision
