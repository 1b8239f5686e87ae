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
        for round_ in range(4 * sqlite_inline.COMMITS_PER_CHECKPOINT):
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO notes (body) VALUES (:body)"),
                                         [{"body": f"{round_}-{i}-" + "字" * 300} for i in range(10)])
            await asyncio.sleep(0)
            largest_wal = max(largest_wal, os.stat(f"{path}-wal").st_size)
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM notes"))).scalar() == 40 * sqlite_inline.COMMITS_PER_CHECKPOINT
    finally:
        await engine.dispose()
    assert checkpoints and threading.main_thread().name not in checkpoints
    # About 1.5 MB went through the WAL; it started over after each checkpoint instead of growing.
    assert largest_wal < 1024 * 1024


async def test_a_checkpoint_never_creates_a_database_that_is_gone(tmp_path):
    sqlite_inline.checkpoint(str(tmp_path / "gone.db"))
    assert not (tmp_path / "gone.db").exists()
