"""SQLite history's own process: killed between two batches (a file goes on, each line once; a temporary
database starts again empty, and says so), ended with its engine, and a clear error when it cannot start."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from support.history_contract import JobScript, feed_commit

from avtomatika import Config, OrchestratorEngine, StateMachineBlueprint
from avtomatika.history import HistoryProcessDied, HistoryWriter, SQLiteHistory
from avtomatika.history import sqlite as sqlite_module
from avtomatika.history.base import FeedMoved, FeedStep, HistoryOpenFailed
from avtomatika.history.sqlite_process import portable
from avtomatika.runtime.context import JobContext
from avtomatika.storage import MemoryStorage


def ended(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie its new parent has not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def kill(history: SQLiteHistory) -> int:
    pid = history.process_id
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: ended(pid))
    return pid


@pytest.fixture
async def file_history(tmp_path: Path) -> AsyncIterator[SQLiteHistory]:
    history = SQLiteHistory(str(tmp_path / "history.db"))
    await history.open()
    try:
        yield history
    finally:
        await history.close()


async def test_a_file_database_goes_on_after_its_process_is_killed_each_line_once(
    file_history: SQLiteHistory, caplog: pytest.LogCaptureFixture
) -> None:
    storage = MemoryStorage()
    writer = HistoryWriter(file_history, storage, retry_initial_s=0.01, retry_max_s=0.05)
    job = JobScript("j").created().step().enter("a")
    await feed_commit(storage, job.events[:2])
    assert await writer.flush()
    killed = await kill(file_history)
    await feed_commit(storage, job.events[2:])
    assert not await writer.flush(0.5)  # the batch in flight meets the dead process: it stays in the feed
    assert isinstance(writer.last_error, HistoryProcessDied)
    assert f"history's SQLite process (pid {killed}) ended (killed by SIGKILL)" in caplog.text
    assert await writer.flush()  # a new process, on the same file
    assert file_history.process_id not in (None, killed)
    assert file_history.restarts == 1
    timeline = await file_history.timeline("j")
    assert [line.seq for line in timeline] == [1, 2, 3, 4]
    assert [line.kind for line in timeline] == ["job_created", "step_finished", "state_left", "state_entered"]
    assert writer.written == 3


async def test_a_batch_written_just_before_the_kill_is_not_written_again(file_history: SQLiteHistory) -> None:
    """The reply lost, the batch committed: its retry is refused (FeedMoved), the writer reads where
    history stands and goes on."""
    storage = MemoryStorage()
    writer = HistoryWriter(file_history, storage)
    await feed_commit(storage, JobScript("j").created().events)
    entries = await storage.read_feed(None, 10)
    kinds = frozenset({"job_created"})
    step = FeedStep(storage.feed_id, None, entries[-1].position)
    await file_history.write_feed([e.events for e in entries], kinds, step)  # written; the writer never knew
    await kill(file_history)
    with pytest.raises(HistoryProcessDied):  # the call that meets the dead process
        await file_history.write_feed([e.events for e in entries], kinds, step)
    with pytest.raises(FeedMoved):  # the next one starts a new process, which has the batch already
        await file_history.write_feed([e.events for e in entries], kinds, step)
    assert await writer.flush()
    assert [line.seq for line in await file_history.timeline("j")] == [1]


def chain() -> StateMachineBlueprint:
    flow = StateMachineBlueprint(name="chain", api_version="v1", api_endpoint="/jobs/chain")

    @flow.handler_for("start", is_start=True)
    async def start(context: JobContext) -> None:
        context.actions.transition_to("done")

    @flow.handler_for("done", is_end=True)
    async def done(context: JobContext) -> None:
        pass

    return flow


async def finish(engine: OrchestratorEngine) -> str:
    job = await engine.create_job("chain", {})
    deadline = time.monotonic() + 10
    while (current := await engine.get_job(job.id)) is None or current.status != "finished":
        assert time.monotonic() < deadline, f"the job did not finish: {current}"
        await asyncio.sleep(0.01)
    return job.id


async def test_a_temporary_database_starts_again_empty_says_so_and_the_engine_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = OrchestratorEngine(MemoryStorage(), Config(HISTORY_DATABASE_URI=None))
    engine.register_blueprint(chain())
    await engine.start(http=False)
    try:
        history, writer = engine.history, engine.history_writer
        assert isinstance(history, SQLiteHistory)
        assert writer is not None
        before = await finish(engine)
        assert await writer.flush()
        assert await history.get_job(before) is not None
        caplog.set_level(logging.INFO)
        await kill(history)
        after = await finish(engine)  # jobs run on, whatever history's process does
        deadline = time.monotonic() + 10
        while not await writer.flush(1) or await history.get_job(after) is None:
            assert time.monotonic() < deadline, "history did not come back"
        assert "the history it held (a temporary database) is gone" in caplog.text
        assert await history.get_job(before) is None  # gone with its process
        assert [line.kind for line in await history.timeline(after)][-1] == "job_finished"
    finally:
        await engine.stop()


_ORPHAN = """
import asyncio, os, signal, sys
from avtomatika.history import SQLiteHistory
async def main():
    history = SQLiteHistory()
    await history.open()
    print(history.process_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(): the engine's process ends, its pipes with it
asyncio.run(main())
"""


async def test_the_process_ends_with_its_engine(tmp_path: Path) -> None:
    engine = subprocess.run(
        [sys.executable, "-c", _ORPHAN], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert engine.returncode == -signal.SIGKILL
    pid = int(engine.stdout.split()[0])
    await eventually(lambda: ended(pid))


async def test_a_database_that_cannot_be_opened_fails_open_clearly(tmp_path: Path) -> None:
    history = SQLiteHistory(str(tmp_path / "no such directory" / "history.db"))
    with pytest.raises(HistoryOpenFailed, match=r"history's SQLite process could not open .*no such directory"):
        await history.open()
    assert history.process_id is None
    with pytest.raises(RuntimeError, match="not open"):
        await history.timeline("j")


async def test_a_process_that_cannot_start_fails_open_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "MODULE", "avtomatika.history.no_such_module")
    monkeypatch.setattr(sqlite_module, "_SPARES", sqlite_module._Spares())  # none started with the real one
    history = SQLiteHistory()
    with pytest.raises(HistoryOpenFailed, match=r"ended at start-up, exit code 1; see stderr"):
        await history.open()
    assert history.process_id is None


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


def test_an_exception_that_does_not_pickle_comes_back_as_a_runtime_error_and_feed_moved_as_itself() -> None:
    assert repr(portable(Unpicklable(1, 2))) == "RuntimeError(\"history's SQLite process: Unpicklable('1 and 2')\")"
    moved = FeedMoved("f", "1-0", "2-0")
    assert portable(moved) is moved


_LIGHT = """
import json, sys
import avtomatika.history.sqlite_process
heavy = ("asyncio", "aiohttp", "pydantic", "avtomatika.engine", "avtomatika.events")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def test_the_process_imports_neither_asyncio_nor_the_engine(tmp_path: Path) -> None:
    """What keeps its start cheap (every engine start pays it): the packages resolve names lazily."""
    probe = subprocess.run(
        [sys.executable, "-c", _LIGHT], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    assert probe.stdout.strip() == "[]"


@pytest.mark.parametrize("package", ["avtomatika", "avtomatika.history"])
def test_every_public_name_resolves_lazily(package: str) -> None:
    import importlib

    module = importlib.import_module(package)
    assert set(module.__all__) == set(module._WHERE)
    for name in module.__all__:
        assert getattr(module, name) is not None
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        module.nothing  # noqa: B018


async def test_histories_opened_one_after_another_get_a_process_started_beforehand(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second open starts a spare, the third takes it; a spare no one takes ends on its own."""
    spares = sqlite_module._Spares()
    monkeypatch.setattr(sqlite_module, "_SPARES", spares)
    monkeypatch.setattr(sqlite_module, "SPARE_IDLE_S", 0.5)
    first, second, third = SQLiteHistory(), SQLiteHistory(), SQLiteHistory()
    await first.open()
    assert spares._ready is None  # one open alone starts none
    await second.open()
    spare = spares._ready
    assert spare is not None
    await third.open()
    assert third.process_id == spare.pid
    left = spares._ready
    assert left is not None
    await asyncio.wait_for(asyncio.to_thread(left.wait), 10)  # no one took it: it ended
    assert left.returncode == 0
    for history in (first, second, third):
        assert await history.counts() is not None
        await history.close()


async def test_a_spare_that_gave_up_as_it_was_taken_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = sqlite_module._spawn(f"{sqlite_module.SPARE_FLAG}0")
    await asyncio.wait_for(asyncio.to_thread(gone.wait), 10)
    monkeypatch.setattr(sqlite_module._SPARES, "take", lambda: (gone, True))
    history = SQLiteHistory()
    await history.open()
    assert history.process_id not in (None, gone.pid)
    assert await history.counts() is not None
    await history.close()


async def test_a_relative_path_is_the_engines_not_the_processs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spare started in another directory opens a relative path where the engine's process sees it."""
    spares = sqlite_module._Spares()
    monkeypatch.setattr(sqlite_module, "_SPARES", spares)
    for _ in range(2):  # the second open starts a spare, here
        warm = SQLiteHistory()
        await warm.open()
        await warm.close()
    assert spares._ready is not None
    monkeypatch.chdir(tmp_path)
    history = SQLiteHistory("relative.db")
    await history.open()
    await history.close()
    assert (tmp_path / "relative.db").exists()


async def test_a_temporary_database_started_again_has_the_blueprint_graphs_the_lost_one_had() -> None:
    history = SQLiteHistory()
    await history.open()
    try:
        await history.save_graph("bp", "v1", {"states": ["start", "end"]})
        await kill(history)
        with pytest.raises(HistoryProcessDied):
            await history.graph("bp", "v1")
        assert await history.graph("bp", "v1") == {"states": ["start", "end"]}  # in the new database
        assert history.restarts == 1
    finally:
        await history.close()
