"""Results on disk: one SQLite file per run folder, written as results are produced.

Tables: ``meta`` (the run's settings), ``attempts`` (one row per (task, agent, gamma), with code,
visible outcome, stats and the line-by-line record), ``tasks`` (one row per finished task: the
final program and its hidden-test score). Several processes may write (WAL mode); every row is
committed at once, so a killed run loses at most the attempt in progress, and ``--resume`` skips
what is stored without duplicating it (primary keys).
"""

from __future__ import annotations

import errno
import functools
import json
import sqlite3
import time
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import EgcfgError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL, agent TEXT NOT NULL, gamma REAL NOT NULL,
    code TEXT NOT NULL, passed_visible INTEGER NOT NULL, tests_passed INTEGER NOT NULL,
    tests_total INTEGER NOT NULL, stop_reason TEXT NOT NULL, stats TEXT NOT NULL,
    lines TEXT NOT NULL DEFAULT '[]', passed_hidden INTEGER, created REAL NOT NULL,
    PRIMARY KEY (task_id, agent, gamma)
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, position INTEGER NOT NULL, final_agent TEXT, final_gamma REAL,
    code TEXT NOT NULL, passed_visible INTEGER NOT NULL, passed_hidden INTEGER NOT NULL,
    hidden_status TEXT NOT NULL, hidden_detail TEXT NOT NULL, stats TEXT NOT NULL, created REAL NOT NULL
);
"""
DB_NAME = "results.sqlite"
LOCK_NAME = ".writer.lock"


class StoreError(EgcfgError):
    """The run folder cannot be read or written (full disk, read-only, corrupted database, in use)."""


def _explain(folder: Path, exc: BaseException) -> StoreError:
    """One line that says what went wrong with the run folder and what to do about it."""
    text = str(exc).lower()
    code = getattr(exc, "errno", None) or getattr(exc, "sqlite_errorcode", None)
    if "disk is full" in text or code == errno.ENOSPC or getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        return StoreError(f"the disk holding {folder} is full: free some space, then continue the run with --resume "
                          f"(every result stored so far is kept)")
    if "not a database" in text or "malformed" in text or getattr(exc, "sqlite_errorname", "") in (
            "SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return StoreError(f"{folder / DB_NAME} is not a readable results database (corrupted?): move it aside and "
                          f"start the run again, or restore it from a copy")
    if ("readonly" in text or "read-only" in text or "unable to open" in text or isinstance(exc, PermissionError)
            or code in (errno.EROFS, errno.EACCES, errno.EPERM)):
        return StoreError(f"{folder} is not writable here ({exc}): make it writable or choose another --out")
    return StoreError(f"{folder / DB_NAME}: {exc}")


def _translated(method):
    """Store methods raise StoreError (one line) instead of sqlite3/OS errors."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as exc:
            raise _explain(self.folder, exc) from None

    return wrapper


def provenance(command: str) -> dict:
    """What every stored or committed result carries: the command, the date and the machine."""
    import datetime
    import os
    import platform

    return {"command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"}


def _open_read_only(path: Path) -> sqlite3.Connection:
    """Read a results database without writing anything next to it. A WAL database needs its
    shared-memory file; where that cannot be created (read-only media, nobody writing), SQLite is
    told the file is immutable."""
    for options in ("mode=ro", "mode=ro&immutable=1"):
        db = sqlite3.connect(f"{path.resolve().as_uri()}?{options}", uri=True, timeout=60)
        try:
            db.execute("SELECT count(*) FROM meta").fetchone()
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if "unable to open" not in str(exc) or options.endswith("immutable=1"):
                raise
        except BaseException:
            db.close()
            raise
    raise AssertionError("unreachable")


class Store:
    """``writer=True`` (the one process that owns a run: ``egcfg bench``) takes the folder's lock, so
    a second run pointed at the same folder stops with one line instead of writing it too; its worker
    processes and threads open the store without it. The lock is the kernel's (flock), so a run that
    was killed leaves no stale lock behind."""

    def __init__(self, folder: str | Path, create: bool = True, writer: bool = False, read_only: bool = False):
        self.folder = Path(folder)
        self.db = None
        self._lock = None
        path = self.folder / DB_NAME
        if not create and not path.is_file():
            raise EgcfgError(f"{self.folder}: not a run folder (no {DB_NAME})")
        if read_only:  # (egcfg report: works on a run in progress, and on read-only media)
            try:
                self.db = _open_read_only(path)
            except (sqlite3.Error, OSError) as exc:
                raise _explain(self.folder, exc) from None
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if writer:
                self._lock = FileLock(self.folder / LOCK_NAME)
                try:
                    self._lock.acquire(timeout=0)
                except Timeout:
                    raise StoreError(f"{self.folder} is being written by another egcfg bench; wait for it to "
                                     f"end, or choose another --out") from None
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)  # autocommit: a row is durable at once
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA busy_timeout=60000")
            self.db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise _explain(self.folder, exc) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @staticmethod
    def is_empty(folder: str | Path) -> bool:
        """True for a run folder that holds no attempt and no task yet, e.g. left by a run that
        failed while starting (a bad agent or model): a new run may take it over."""
        path = Path(folder) / DB_NAME
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return not any(db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() for table in ("attempts", "tasks"))
            finally:
                db.close()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # created, then the run failed before its schema
                return True
            raise _explain(Path(folder), exc) from None
        except sqlite3.Error as exc:  # not a run database we can read: say why, never take it over
            raise _explain(Path(folder), exc) from None

    # -- meta ------------------------------------------------------------------------------------
    @_translated
    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    @_translated
    def clear_meta(self) -> None:
        self.db.execute("DELETE FROM meta")

    @_translated
    def set_meta(self, **values) -> None:
        for key, value in values.items():
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    # -- attempts --------------------------------------------------------------------------------
    @_translated
    def add_attempt(self, task_id: str, agent: str, attempt, lines: list[dict], replace: bool = False) -> None:
        """Store an attempt once (a second one for the same key is ignored), or ``replace`` the stored one."""
        self.db.execute(
            f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (task_id, agent, attempt.gamma, attempt.code, int(attempt.passed), attempt.tests_passed,
             attempt.tests_total, attempt.stop_reason, json.dumps(attempt.stats.to_dict()), json.dumps(lines), time.time()))

    @_translated
    def add_attempt_row(self, row: dict) -> None:
        """An attempt as another run stored it (``attempts()``'s row: rescore_as.py), with its hidden
        verdict left to be scored here."""
        self.db.execute(
            "INSERT OR IGNORE INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (row["task_id"], row["agent"], row["gamma"], row["code"], row["passed_visible"], row["tests_passed"],
             row["tests_total"], row["stop_reason"], json.dumps(row["stats"]), json.dumps(row.get("lines", [])),
             row["created"]))

    @_translated
    def attempts(self, task_id: str | None = None, lines: bool = True) -> list[dict]:
        """Stored attempts, oldest first; ``lines=False`` leaves out their line-by-line records (the
        bulk of a row: planning and finalizing read only the rest)."""
        columns = "*" if lines else "task_id, agent, gamma, code, passed_visible, tests_passed, tests_total, " \
                                    "stop_reason, stats, passed_hidden, created"
        query = f"SELECT {columns} FROM attempts" + (" WHERE task_id = ?" if task_id else "") + " ORDER BY created"
        cur = self.db.execute(query, (task_id,) if task_id else ())
        cols = [c[0] for c in cur.description]
        rows = [dict(zip(cols, r)) for r in cur]
        for row in rows:
            row["stats"] = json.loads(row["stats"])
            if lines:
                row["lines"] = json.loads(row["lines"])
        return rows

    @_translated
    def set_attempt_hidden(self, task_id: str, agent: str, gamma: float, passed: bool) -> None:
        self.db.execute("UPDATE attempts SET passed_hidden = ? WHERE task_id = ? AND agent = ? AND gamma = ?",
                        (int(passed), task_id, agent, gamma))

    # -- tasks -----------------------------------------------------------------------------------
    @_translated
    def add_task(self, task_id: str, position: int, final: dict | None, passed_visible: bool, hidden: dict,
                 stats: dict) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, position, final and final["agent"], final and final["gamma"], (final or {}).get("code", ""),
             int(passed_visible), int(hidden["passed"]), hidden["status"], hidden["detail"], json.dumps(stats), time.time()))

    @_translated
    def done_tasks(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT task_id FROM tasks")}

    @_translated
    def tasks(self) -> list[dict]:
        cur = self.db.execute("SELECT * FROM tasks ORDER BY position")
        cols = [c[0] for c in cur.description]
        rows = [dict(zip(cols, r)) for r in cur]
        for row in rows:
            row["stats"] = json.loads(row["stats"])
        return rows
