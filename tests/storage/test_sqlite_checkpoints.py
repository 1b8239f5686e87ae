"""SQLite's WAL is checkpointed beside the event loop, never inside a commit on it."""

from __future__ import annotations

import asyncio
import os
import threading

from sqlalchemy import text

from storage import sqlite_inline
from storage.db import make_engine


async def test_checkpoints_run_in_a_worker_thread_every_few_dozen_commits(tmp_path, monkeypatch):
    checkpoints: list[str] = []
    real = sqlite_inline.checkpoint

    def watched(path: str) -> None:
        checkpoints.append(threading.current_thread().name)
        real(path)

    monkeypatch.setattr(sqlite_inline, "checkpoint", watched)
    path = tmp_path / "wal.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as connection:
            # SQLite itself no longer checkpoints inside a commit.
            assert (await connection.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 0
            await connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
        largest_wal = 0
        rounds = 6 * sqlite_inline.CHECKPOINTS_PER_RESTART * sqlite_inline.COMMITS_PER_CHECKPOINT
        for round_ in range(rounds):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO notes (body) VALUES (:body)"),
                                         [{"body": f"{round_}-{i}-" + "字" * 300} for i in range(10)])
            await asyncio.sleep(0)
            largest_wal = max(largest_wal, os.stat(f"{path}-wal").st_size)
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM notes"))).scalar() == 10 * rounds
    finally:
        await engine.dispose()
    assert len(checkpoints) >= 2 * sqlite_inline.CHECKPOINTS_PER_RESTART
    assert threading.main_thread().name not in checkpoints
    # About 9 MB went through the WAL; it started over every few checkpoints instead of growing.
    assert largest_wal < 4 * 1024 * 1024


async def test_transactions_go_on_during_a_checkpoint_except_when_the_wal_starts_over(tmp_path, monkeypatch):
    """A slow checkpoint (a slow disk's sync) holds up no transaction, except after every few
    checkpoints: then the next transaction waits for it, so that the WAL can start over."""
    restart = sqlite_inline.CHECKPOINTS_PER_RESTART
    gate = threading.Event()
    started: list[int] = []
    finished: list[int] = []
    real = sqlite_inline.checkpoint

    def slow(path: str) -> None:
        started.append(1)
        if len(started) in (1, restart):  # these wait for the test, as a slow disk would
            gate.wait(10)
        real(path)
        finished.append(1)

    monkeypatch.setattr(sqlite_inline, "checkpoint", slow)
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}")

    async def commit_one() -> None:
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO notes (body) VALUES ('x')"))

    async def commit_until(checkpoints: int) -> None:
        # Counted as they are handed to the worker thread, which may not have run them yet.
        for _ in range(checkpoints * 4 * sqlite_inline.COMMITS_PER_CHECKPOINT):
            if inline._checkpoints >= checkpoints:
                return
            await asyncio.wait_for(commit_one(), 5)
        raise AssertionError(f"only {inline._checkpoints} checkpoints started")

    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
            inline = (await connection.get_raw_connection()).driver_connection  # the pool's only one
        await commit_until(1)
        for _ in range(2 * sqlite_inline.COMMITS_PER_CHECKPOINT):  # while the first is held up
            await asyncio.wait_for(commit_one(), 5)
        assert finished == [] and inline._checkpoints == 1
        gate.set()
        while not finished:
            await asyncio.sleep(0.01)
        gate.clear()
        await commit_until(restart)
        waiting = asyncio.ensure_future(commit_one())
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the transaction after a restarting checkpoint waits for it
        gate.set()
        await asyncio.wait_for(waiting, 5)
    finally:
        gate.set()
        await engine.dispose()


async def test_a_checkpoint_never_creates_a_database_that_is_gone(tmp_path):
    sqlite_inline.checkpoint(str(tmp_path / "gone.db"))
    assert not (tmp_path / "gone.db").exists()
