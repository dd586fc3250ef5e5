"""The SQLite store: schema, migrations, compare-and-set transitions, events,
lookups and worker heartbeats. Real database files in tmp_path, no mocks."""

from __future__ import annotations

import multiprocessing
import queue
import sqlite3
import threading
from collections import deque
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import IllegalTransitionError, JobNotFoundError, StoreError, UsageError
from orchestrator.models import (
    TRANSITIONS,
    DataRef,
    GpuNeed,
    JobSpec,
    JobState,
    OutputSpec,
)
from orchestrator.store import SCHEMA_VERSION, Store

from .conftest import heartbeat

S = JobState
LEGAL = sorted(((src, dst) for src, dsts in TRANSITIONS.items() for dst in dsts),
               key=lambda p: (p[0].value, p[1].value))


def spec(name: str = "train", priority: int = 0, **kw: Any) -> JobSpec:
    base = JobSpec(
        name=name, script="train.py", args=("--epochs", "3"), target="local",
        gpu=GpuNeed.ANY, priority=priority, estimate_s=None, snapshot_sha256="ab" * 32,
        data=(), outputs=(), env=(),
    )
    return replace(base, **kw)


def path_to(state: JobState) -> list[JobState]:
    """The shortest chain of states QUEUED → … → ``state`` (BFS over the table)."""
    prev: dict[JobState, JobState | None] = {S.QUEUED: None}
    todo = deque([S.QUEUED])
    while todo:
        cur = todo.popleft()
        for nxt in sorted(TRANSITIONS[cur], key=lambda s: s.value):
            if nxt not in prev:
                prev[nxt] = cur
                todo.append(nxt)
    chain: list[JobState] = []
    node: JobState | None = state
    while node is not None:
        chain.append(node)
        node = prev[node]
    return chain[::-1]


def same(a: Any, b: Any) -> bool:
    """Field-by-field equality (records compare by identity)."""
    return type(a) is type(b) and asdict(a) == asdict(b)


def raw(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Query the file with a plain sqlite3 connection (not through Store)."""
    con = sqlite3.connect(db_path)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


# ---- schema ------------------------------------------------------------------------


def test_fresh_store_has_schema_version_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    Store(db).close()
    assert raw(db, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
    assert SCHEMA_VERSION >= 1
    assert raw(db, "PRAGMA journal_mode")[0][0].lower() == "wal"
    tables = {r[0] for r in raw(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "attempts", "events", "workers"} <= tables


def test_reopening_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with Store(db) as s:
        job = s.insert_jobs([spec()])[0]
    schema_before = raw(db, "SELECT sql FROM sqlite_master ORDER BY name")
    for _ in range(3):
        with Store(db) as s:
            assert same(s.get(job.id), job)
    assert raw(db, "SELECT sql FROM sqlite_master ORDER BY name") == schema_before
    assert raw(db, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
    assert raw(db, "SELECT COUNT(*) FROM jobs")[0][0] == 1


def test_concurrent_first_opens_migrate_once(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            barrier.wait()
            Store(db).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert raw(db, "PRAGMA user_version")[0][0] == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError) as info:
        Store(db)
    assert "newer" in str(info.value)
    # and nothing was created in it
    assert raw(db, "SELECT COUNT(*) FROM sqlite_master WHERE type='table'")[0][0] == 0
    assert raw(db, "PRAGMA user_version")[0][0] == SCHEMA_VERSION + 1


def test_non_sqlite_file_is_a_store_error(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    junk = b"this is not an SQLite database, just some text\n" * 200
    db.write_bytes(junk)
    with pytest.raises(StoreError) as info:
        Store(db)
    assert str(db) in str(info.value)
    assert db.read_bytes() == junk


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        Store(tmp_path / "no" / "such" / "dir" / "state.db")


# ---- inserting and reading jobs ------------------------------------------------------


def test_insert_jobs_round_trips_every_field(store: Store) -> None:
    s1 = spec(
        "exp", priority=3, args=("--lr", "0.1"), target="auto", gpu=GpuNeed.REQUIRED,
        estimate_s=2400.0, data=(DataRef("data/x.csv", "cd" * 32, 12, "file"),
                                 DataRef("imgs", "ef" * 32, 99, "dir")),
        outputs=(OutputSpec("model.h5", "."), OutputSpec(".", "")),
        env=(("A", "1"), ("B", "")), autotrack=True, sweep=(("lr", "0.1"),),
    )
    jobs = store.insert_jobs([s1, spec("other")], now=1000.0)
    job = jobs[0]
    assert (job.name, job.script, job.args, job.target, job.gpu) == (
        "exp", "train.py", ("--lr", "0.1"), "auto", GpuNeed.REQUIRED)
    assert (job.priority, job.estimate_s, job.snapshot_sha256) == (3, 2400.0, "ab" * 32)
    assert job.data == s1.data and job.outputs == s1.outputs and job.env == s1.env
    assert job.autotrack is True
    assert job.state is S.QUEUED and job.attempt == 1 and job.worker_id is None
    assert job.submitted_at == job.updated_at == 1000.0
    assert job.progress == {} and job.pulled_to == () and not job.cancel_requested
    assert same(store.get(job.id), job)
    assert jobs[1].seq == job.seq + 1
    assert len({j.id for j in jobs}) == 2


def test_insert_appends_a_submitted_event(store: Store) -> None:
    job = store.insert_jobs([spec()])[0]
    events = store.events(job.id)
    assert len(events) == 1
    assert (events[0].src, events[0].dst) == (None, "QUEUED")
    assert "submitted" in events[0].message


def test_insert_jobs_is_all_or_nothing(store: Store, project: Any) -> None:
    store.insert_jobs([spec("before")])
    bad = spec(None)  # type: ignore[arg-type]  # name is NOT NULL: the 3rd insert fails
    with pytest.raises((sqlite3.Error, StoreError)):
        store.insert_jobs([spec("a"), spec("b"), bad, spec("c")])
    assert [j.name for j in store.jobs()] == ["before"]
    db = project.db_path
    assert raw(db, "SELECT COUNT(*) FROM events")[0][0] == 1
    # the store is still usable and seq continues without a gap
    after = store.insert_jobs([spec("after")])[0]
    assert after.seq == store.resolve("before").seq + 1


def test_seq_is_monotonic_across_batches(store: Store) -> None:
    seqs = [j.seq for _ in range(3) for j in store.insert_jobs([spec(), spec()])]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6


def test_get_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFoundError):
        store.get("deadbeef")


# ---- transitions -------------------------------------------------------------------


def test_path_helper_reaches_every_state() -> None:
    for state in JobState:
        chain = path_to(state)
        assert chain[0] is S.QUEUED and chain[-1] is state
        for a, b in zip(chain, chain[1:]):
            assert b in TRANSITIONS[a]


@pytest.mark.parametrize(("src", "dst"), LEGAL, ids=[f"{a.value}->{b.value}" for a, b in LEGAL])
def test_every_legal_transition_through_the_store(store: Store, src: JobState,
                                                  dst: JobState) -> None:
    job = store.insert_jobs([spec()])[0]
    chain = path_to(src)
    for a, b in zip(chain, chain[1:]):
        store.transition(job.id, b, f"{a.value} to {b.value}", expect=[a])
    assert store.get(job.id).state is src
    before = len(store.events(job.id))
    moved = store.transition(job.id, dst, "the step under test", expect=[src])
    assert moved.state is dst
    assert store.get(job.id).state is dst
    events = store.events(job.id)
    assert len(events) == before + 1
    assert (events[-1].src, events[-1].dst, events[-1].message) == (
        src.value, dst.value, "the step under test")
    # the whole history is a chain of src → dst pairs
    history = [(e.src, e.dst) for e in events]
    assert history[0] == (None, "QUEUED")
    for (_, d1), (s2, _) in zip(history, history[1:]):
        assert d1 == s2


@pytest.mark.parametrize("dst", list(JobState), ids=[s.value for s in JobState])
def test_default_expect_refuses_from_a_wrong_state(store: Store, dst: JobState) -> None:
    """With no ``expect``, the sources are every legal source of ``dst``; a job in
    any other state is refused and left alone."""
    job = store.insert_jobs([spec()])[0]
    # put the job in a state from which dst is illegal
    wrong = next((s for s in JobState if dst not in TRANSITIONS[s]), None)
    assert wrong is not None
    chain = path_to(wrong)
    for a, b in zip(chain, chain[1:]):
        store.transition(job.id, b, expect=[a])
    before = store.get(job.id)
    n_events = len(store.events(job.id))
    with pytest.raises(IllegalTransitionError) as info:
        store.transition(job.id, dst)
    assert wrong.value in str(info.value)
    assert same(store.get(job.id), before)
    assert len(store.events(job.id)) == n_events


def test_second_identical_transition_loses(store: Store) -> None:
    job = store.insert_jobs([spec()])[0]
    store.transition(job.id, S.ASSIGNED, expect=[S.QUEUED], worker_id="w1")
    after_first = store.get(job.id)
    with pytest.raises(IllegalTransitionError) as info:
        store.transition(job.id, S.ASSIGNED, expect=[S.QUEUED], worker_id="w2")
    assert "ASSIGNED" in str(info.value)
    assert same(store.get(job.id), after_first)
    assert store.get(job.id).worker_id == "w1"
    assert [e.dst for e in store.events(job.id)] == ["QUEUED", "ASSIGNED"]


def test_expect_with_an_illegal_source_is_refused_before_writing(store: Store) -> None:
    job = store.insert_jobs([spec()])[0]
    with pytest.raises(IllegalTransitionError):
        store.transition(job.id, S.PULLED, expect=[S.QUEUED])
    assert store.get(job.id).state is S.QUEUED
    assert len(store.events(job.id)) == 1


def test_attempt_fencing(store: Store) -> None:
    job = store.insert_jobs([spec()])[0]
    assert job.attempt == 1
    with pytest.raises(IllegalTransitionError):
        store.transition(job.id, S.ASSIGNED, expect=[S.QUEUED], on_attempt=2, worker_id="zombie")
    unchanged = store.get(job.id)
    assert same(unchanged, job)
    assert len(store.events(job.id)) == 1
    moved = store.transition(job.id, S.ASSIGNED, expect=[S.QUEUED], on_attempt=1, worker_id="w")
    assert moved.state is S.ASSIGNED and moved.worker_id == "w"


def test_requeue_bumps_attempt_and_fences_the_old_one(store: Store) -> None:
    job = store.insert_jobs([spec()])[0]
    store.transition(job.id, S.ASSIGNED, expect=[S.QUEUED], on_attempt=1, worker_id="w1")
    store.transition(job.id, S.RUNNING, expect=[S.ASSIGNED], on_attempt=1)
    store.transition(job.id, S.LOST, expect=[S.RUNNING], on_attempt=1)
    store.transition(job.id, S.QUEUED, expect=[S.LOST], on_attempt=1, attempt=2, worker_id=None)
    store.transition(job.id, S.ASSIGNED, expect=[S.QUEUED], on_attempt=2, worker_id="w2")
    # a late report from attempt 1 must not finish attempt 2
    with pytest.raises(IllegalTransitionError):
        store.transition(job.id, S.SUCCEEDED, expect=[S.ASSIGNED, S.RUNNING], on_attempt=1)
    assert not store.update(job.id, on_attempt=1, progress={"epoch": 9})
    now = store.get(job.id)
    assert (now.state, now.attempt, now.worker_id, now.progress) == (S.ASSIGNED, 2, "w2", {})
    assert store.update(job.id, on_attempt=2, progress={"epoch": 1})
    assert store.get(job.id).progress == {"epoch": 1}


def test_transition_sets_fields_in_the_same_statement(store: Store) -> None:
    job = store.insert_jobs([spec()])[0]
    store.transition(job.id, S.ASSIGNED, worker_id="w9")
    done = store.transition(job.id, S.SUCCEEDED, exit_code=0, progress={"epoch": 3},
                            finished_at=123.0)
    assert (done.worker_id, done.exit_code, done.progress, done.finished_at) == (
        "w9", 0, {"epoch": 3}, 123.0)
    pulled = store.transition(job.id, S.PULLED, pulled_to=["models/train"])
    assert pulled.pulled_to == ("models/train",)
    assert pulled.updated_at >= done.updated_at >= job.updated_at


def test_transition_of_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFoundError):
        store.transition("00000000", S.CANCELLED)
    assert store.events("00000000") == []


def test_note_adds_a_non_transition_event(store: Store) -> None:
    job = store.insert_jobs([spec()])[0]
    store.note(job.id, "hello")
    last = store.events(job.id)[-1]
    assert (last.src, last.dst, last.message) == (None, None, "hello")
    assert store.get(job.id).state is S.QUEUED


def test_counts(store: Store) -> None:
    a, b, _ = store.insert_jobs([spec(), spec(), spec()])
    store.transition(a.id, S.ASSIGNED)
    store.transition(b.id, S.CANCELLED)
    assert store.counts() == {S.QUEUED: 1, S.ASSIGNED: 1, S.CANCELLED: 1}


# ---- races -------------------------------------------------------------------------


def _contend(db: Path, ids: list[str], me: str, barrier: Any, out: Any) -> None:
    """One contender: its own connection, tries to claim every job."""
    won = []
    with Store(db) as s:
        barrier.wait()
        for job_id in ids:
            try:
                s.transition(job_id, S.ASSIGNED, f"claimed by {me}", expect=[S.QUEUED],
                             on_attempt=1, worker_id=me)
                won.append(job_id)
            except IllegalTransitionError:
                pass
    out.put((me, won))


def _check_race(store: Store, ids: list[str], results: list[tuple[str, list[str]]],
                contenders: int) -> None:
    assert len(results) == contenders
    winners: dict[str, list[str]] = {}
    for me, won in results:
        for job_id in won:
            winners.setdefault(job_id, []).append(me)
    for job_id in ids:
        assert len(winners.get(job_id, [])) == 1, (job_id, winners.get(job_id))
        job = store.get(job_id)
        assert job.state is S.ASSIGNED
        assert job.worker_id == winners[job_id][0]
        assigned = [e for e in store.events(job_id) if e.dst == "ASSIGNED"]
        assert len(assigned) == 1 and assigned[0].message == f"claimed by {job.worker_id}"


def test_concurrent_cas_threads_exactly_one_wins(store: Store) -> None:
    ids = [j.id for j in store.insert_jobs([spec() for _ in range(40)])]
    contenders = 4
    out: queue.Queue[tuple[str, list[str]]] = queue.Queue()
    barrier = threading.Barrier(contenders, timeout=60)
    threads = [threading.Thread(target=_contend, args=(store.path, ids, f"t{i}", barrier, out))
               for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    _check_race(store, ids, [out.get_nowait() for _ in range(contenders)], contenders)


def test_concurrent_cas_processes_exactly_one_wins(store: Store) -> None:
    ids = [j.id for j in store.insert_jobs([spec() for _ in range(30)])]
    contenders = 2
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(contenders, timeout=60)
    out = ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(store.path, ids, f"p{i}", barrier, out))
             for i in range(contenders)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in range(contenders)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    _check_race(store, ids, results, contenders)


# ---- lookups -----------------------------------------------------------------------


def _unique_prefix(job_id: str, others: list[str]) -> str:
    for n in range(1, len(job_id) + 1):
        if not any(o.startswith(job_id[:n]) for o in others if o != job_id):
            return job_id[:n]
    raise AssertionError("ids are unique")


def test_resolve_by_id_prefix_and_name(store: Store) -> None:
    jobs = store.insert_jobs([spec("alpha"), spec("beta"), spec("gamma")])
    ids = [j.id for j in jobs]
    for job in jobs:
        assert store.resolve(job.id).id == job.id
        assert store.resolve(f"  {job.id} ").id == job.id
        prefix = _unique_prefix(job.id, ids)
        if len(prefix) < len(job.id):
            assert store.resolve(prefix).id == job.id
        assert store.resolve(job.name).id == job.id


def test_resolve_ambiguous_prefix(store: Store) -> None:
    # 40 random hex ids: some first character is shared by at least 3 (pigeonhole)
    jobs = store.insert_jobs([spec(f"j{i}") for i in range(40)])
    firsts: dict[str, int] = {}
    for j in jobs:
        firsts[j.id[0]] = firsts.get(j.id[0], 0) + 1
    shared = max(firsts, key=lambda c: firsts[c])
    assert firsts[shared] >= 2
    with pytest.raises(JobNotFoundError) as info:
        store.resolve(shared)
    assert "ambiguous" in str(info.value)


def test_resolve_name_gives_the_newest(store: Store) -> None:
    old, _, new = store.insert_jobs([spec("exp"), spec("other"), spec("exp")])
    assert store.resolve("exp").id == new.id
    store.transition(new.id, S.CANCELLED)  # state does not matter, recency does
    assert store.resolve("exp").id == new.id
    assert old.seq < new.seq


def test_resolve_unknown_and_empty(store: Store) -> None:
    store.insert_jobs([spec("exp")])
    for ref in ("", "   ", "nope", "exp2", "zz"):
        with pytest.raises(JobNotFoundError):
            store.resolve(ref)


@pytest.mark.parametrize("ref", ["%", "_", "__", "%%%%%%%%"])
def test_resolve_treats_like_wildcards_literally(store: Store, ref: str) -> None:
    store.insert_jobs([spec("one")])  # one job: a wildcard would match it uniquely
    with pytest.raises(JobNotFoundError):
        store.resolve(ref)


def test_queued_orders_by_priority_then_submit_order(store: Store) -> None:
    jobs = store.insert_jobs([
        spec("a", priority=0), spec("b", priority=5), spec("c", priority=0),
        spec("d", priority=5), spec("e", priority=-1), spec("f", priority=10),
    ])
    later = store.insert_jobs([spec("g", priority=5)])
    by_name = {j.name: j for j in [*jobs, *later]}
    store.transition(by_name["f"].id, S.ASSIGNED)  # not queued any more
    assert [j.name for j in store.queued()] == ["b", "d", "g", "a", "c", "e"]


def test_jobs_filters_and_orders(store: Store) -> None:
    _, b, _ = store.insert_jobs([spec("a"), spec("b"), spec("c")])
    store.transition(b.id, S.CANCELLED)
    assert [j.name for j in store.jobs()] == ["a", "b", "c"]
    assert [j.name for j in store.jobs(newest_first=True, limit=2)] == ["c", "b"]
    assert [j.name for j in store.jobs([S.QUEUED])] == ["a", "c"]
    assert [j.name for j in store.jobs([S.CANCELLED, S.RUNNING])] == ["b"]


# ---- attempts ----------------------------------------------------------------------


def test_the_moves_of_a_life_keep_attempts_and_events_together(store: Store) -> None:
    job = store.insert_jobs([spec()])[0]
    store.assign(job.id, 1, "w1", "local")
    store.start(job.id, 1, 5.0, "started on w1")
    lost = store.lose(job.id, 1, "no heartbeat")
    assert (lost.state, lost.attempt, lost.worker_id) == (S.QUEUED, 2, None)
    store.assign(job.id, 2, "w2", "remote")
    store.update_attempt(job.id, 2, resumed_from_epoch=3)
    done = store.finish(job.id, 2, S.SUCCEEDED, "result sealed", exit_code=0)
    assert (done.state, done.hub, done.exit_code) == (S.SUCCEEDED, "remote", 0)
    first, second = store.attempts(job.id)
    assert (first.n, first.worker_id, first.started_at, first.outcome) == (1, "w1", 5.0, "LOST")
    assert first.ended_at is not None
    assert (second.n, second.worker_id, second.resumed_from_epoch, second.outcome) == (
        2, "w2", 3, "SUCCEEDED")
    moves = [(e.src, e.dst) for e in store.events(job.id)]
    assert moves == [(None, "QUEUED"), ("QUEUED", "ASSIGNED"), ("ASSIGNED", "RUNNING"),
                     ("RUNNING", "LOST"), ("LOST", "QUEUED"), ("QUEUED", "ASSIGNED"),
                     ("ASSIGNED", "SUCCEEDED")]


def test_losing_is_one_transaction(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure between LOST and QUEUED (here: the event insert of the re-queue)
    leaves the job as it was, ASSIGNED, never stranded in LOST."""
    job = store.insert_jobs([spec()])[0]
    store.assign(job.id, 1, "w1", "local")
    real = store._requeue

    def broken(*args: Any) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_requeue", broken)
    with pytest.raises(sqlite3.OperationalError):
        store.lose(job.id, 1, "no heartbeat")
    assert store.get(job.id).state is S.ASSIGNED
    assert store.attempts(job.id)[0].outcome is None
    monkeypatch.setattr(store, "_requeue", real)
    assert store.lose(job.id, 1, "no heartbeat").state is S.QUEUED


def test_a_cancel_asked_while_on_a_worker_ends_a_lost_job(store: Store) -> None:
    job = store.insert_jobs([spec()])[0]
    store.assign(job.id, 1, "w1", "local")
    assert store.cancel(job.id) == "cancelling"
    assert store.lose(job.id, 1, "gone").state is S.CANCELLED
    with pytest.raises(UsageError, match="nothing to cancel"):
        store.cancel(job.id)


def test_retry_accepts_any_finished_job_and_fresh_starts_over(store: Store) -> None:
    a, b, c = store.insert_jobs([spec("a"), spec("b"), spec("c")])
    with pytest.raises(UsageError, match="only a job that has ended"):
        store.retry(a.id)
    store.assign(a.id, 1, "w", "local")
    store.finish(a.id, 1, S.SUCCEEDED, "sealed")
    store.transition(a.id, S.PULLED, pulled_to=["models/a/m.h5"])
    again = store.retry(a.id)
    assert (again.state, again.attempt, again.fresh_from) == (S.QUEUED, 2, 1)
    store.cancel(b.id)
    fresh = store.retry(b.id, fresh=True)
    assert (fresh.attempt, fresh.fresh_from) == (2, 2)
    store.assign(c.id, 1, "w", "local")
    store.finish(c.id, 1, S.SUCCEEDED, "sealed")
    store.update(c.id, pull_error="disk full")
    retried = store.retry(c.id)
    assert retried.state is S.QUEUED and retried.pull_error is None


def test_legacy_lost_jobs_are_requeued(store: Store) -> None:
    job = store.insert_jobs([spec()])[0]
    store.assign(job.id, 1, "w1", "local")
    store.transition(job.id, S.LOST, expect=[S.ASSIGNED])  # as an older orch left it
    assert store.requeue_lost() == [job.id]
    assert (store.get(job.id).state, store.get(job.id).attempt) == (S.QUEUED, 2)


# ---- workers -----------------------------------------------------------------------


def beat(seq: int, state: str = "idle", wid: str = "w1", **kw: Any) -> Any:
    return replace(heartbeat(wid, seq=seq, state=state, name="laptop", host="h",
                                         pid=42), **kw)


def test_upsert_worker_seq_semantics(store: Store) -> None:
    assert store.upsert_worker(beat(1), seen_at=100.0) == (True, True)
    (w,) = store.workers()
    assert (w.id, w.name, w.kind, w.pid, w.gpu, w.last_seen) == (
        "w1", "laptop", "local", 42, False, 100.0)

    # the same heartbeat file read again: not news, last_seen stays
    assert store.upsert_worker(beat(1, state="busy"), seen_at=200.0) == (False, False)
    (w,) = store.workers()
    assert w.last_seen == 100.0 and w.state == "idle"

    # the counter moved: last_seen is the daemon's clock, fields are refreshed
    assert store.upsert_worker(beat(2, state="busy", job_id="j1", attempt=1),
                               seen_at=300.0) == (False, True)
    (w,) = store.workers()
    assert (w.last_seen, w.state, w.job_id, w.attempt) == (300.0, "busy", "j1", 1)

    assert store.upsert_worker(beat(2), seen_at=400.0) == (False, False)
    assert store.workers()[0].last_seen == 300.0


def test_upsert_worker_gpu_capabilities(store: Store) -> None:
    store.upsert_worker(heartbeat("g", kind="colab", gpu=True), seen_at=1.0)
    (w,) = store.workers()
    assert (w.kind, w.gpu, w.gpu_name, w.name) == ("colab", True, "T4", "g")


def test_gone_workers_and_lease_refresh(store: Store) -> None:
    store.upsert_worker(beat(1), seen_at=10.0)
    store.upsert_worker(beat(1, wid="w2"), seen_at=20.0)
    store.mark_worker_gone("w1")
    assert [w.id for w in store.workers()] == ["w2"]
    assert {w.id: w.gone for w in store.workers(include_gone=True)} == {"w1": True, "w2": False}
    store.refresh_worker_leases(99.0)
    seen = {w.id: w.last_seen for w in store.workers(include_gone=True)}
    assert seen == {"w1": 10.0, "w2": 99.0}  # gone workers get no new lease


def test_a_name_wins_over_an_id_prefix(store: Store) -> None:
    """A job named like the start of another's id (``ae``, ``b``) is found by its name."""
    first = store.insert_jobs([spec("x")])[0]
    named = store.insert_jobs([spec(first.id[:2])])[0]
    assert store.resolve(first.id[:2]).id == named.id
    longer = first.id[:max(3, len(_unique_prefix(first.id, [first.id, named.id])))]
    assert store.resolve(longer).id == first.id  # a longer prefix is still an id
