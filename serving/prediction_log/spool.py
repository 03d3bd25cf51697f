"""The prediction log's local spool: rows the database could not take, kept on disk until it can.

A directory of append-only segment files, one JSON object per line. An append
is whole lines written in one go and then fsync'd (a new segment's directory
entry too), so a row counts as durable only once it is on disk. A crash in the
middle of an append can leave a torn last line: its rows were never counted
durable, and reading skips it. An append that fails is cut back to where it
started, so the next one begins on a line boundary.

Replay inserts a sealed segment's rows and only then deletes the segment: a
crash mid-replay replays the segment again, and the log's insert ignores rows
already present (``prediction_id`` is the key), so replaying twice adds
nothing.

Each process appends to a segment of its own and holds an exclusive ``flock``
on it while it is open; replay takes the same lock without waiting, so two API
processes sharing the directory never replay (and delete) a segment that is
still being written. A segment's name carries a tag of the database it is
meant for (``tag``), and only segments with this spool's tag are replayed: two
APIs with different log databases sharing a folder never cross-post.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from core.files import fsync_directory

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"


class SpoolFull(OSError):
    """The spool is at its size cap: it refuses rows as a full disk would."""


class Spool:
    """Durable, append-only overflow of the prediction log, replayed oldest segment first."""

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        datetime_columns: Iterable[str],
        tag: str = "log",
        segment_rows: int = 10_000,
    ) -> None:
        self.directory = directory
        self.tag = tag
        self.max_bytes = max_bytes
        self.segment_rows = segment_rows
        self._datetime_columns = frozenset(datetime_columns)
        self._lock = threading.Lock()
        self._fd: int | None = None  # the segment this process appends to
        self._path: Path | None = None
        self._offset = 0  # its length in bytes: where the next append starts
        self._active_rows = 0
        self.rows, self.bytes = self._scan()

    def _scan(self) -> tuple[int, int]:
        """Rows and bytes already waiting (left by an earlier process); an unreadable directory counts as empty."""
        rows = size = 0
        others = 0
        try:
            for path in self.directory.glob(f"*{SUFFIX}"):
                if not path.name.endswith(self._suffix):
                    others += 1
                    continue
                data = path.read_bytes()
                rows += data.count(b"\n")
                size += len(data)
        except OSError as exc:
            log.warning("cannot read the prediction spool %s: %s", self.directory, exc)
        if rows:
            log.warning("prediction spool %s holds %d rows from before; they are replayed", self.directory, rows)
        if others:
            log.warning(
                "prediction spool %s holds %d segments meant for another log database; they are left alone",
                self.directory,
                others,
            )
        return rows, size

    @property
    def _suffix(self) -> str:
        return f"-{self.tag}{SUFFIX}"

    # --- appending ----------------------------------------------------------------

    def append(self, rows: list[dict[str, Any]], timeout: float = -1) -> None:
        """Write ``rows`` and fsync them; when this returns they survive a crash of the process or the machine.

        Raises:
            OSError: nothing of ``rows`` counts as written (``SpoolFull`` at the size cap,
                ``TimeoutError`` if the spool stayed busy for ``timeout`` seconds).
        """
        data = b"".join(self._line(row) for row in rows)
        if not self._lock.acquire(timeout=timeout):
            raise TimeoutError("the spool is busy")
        try:
            if self.bytes + len(data) > self.max_bytes:
                raise SpoolFull(f"the spool holds {self.bytes} bytes; its cap is {self.max_bytes}")
            fd = self._active()
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._offset)
                self._seal()  # the next append starts a fresh segment
                raise
            self._offset += len(data)
            self._active_rows += len(rows)
            self.rows += len(rows)
            self.bytes += len(data)
            if self._active_rows >= self.segment_rows:
                self._seal()
        finally:
            self._lock.release()

    def check(self) -> None:
        """Raise what an append would raise before writing anything (an unusable directory, the cap)."""
        with self._lock:
            if self.bytes >= self.max_bytes:
                raise SpoolFull(f"the spool holds {self.bytes} bytes; its cap is {self.max_bytes}")
            self._active()

    def _line(self, row: dict[str, Any]) -> bytes:
        return (json.dumps(row, default=_iso, separators=(",", ":")) + "\n").encode()

    def _active(self) -> int:
        if self._fd is not None:
            return self._fd
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{time.time_ns():020d}-{os.getpid()}{self._suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fsync_directory(self.directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        self._fd, self._path, self._offset, self._active_rows = fd, path, 0, 0
        return fd

    def _seal(self) -> None:
        """Close the active segment (releasing its lock), so that replay may take it."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        if self._path is not None and self._offset == 0:
            with contextlib.suppress(OSError):
                self._path.unlink()  # nothing in it
        self._fd, self._path, self._offset, self._active_rows = None, None, 0, 0

    def close(self) -> None:
        with self._lock:
            self._seal()

    # --- replaying ----------------------------------------------------------------

    def replay_one(self, insert: Callable[[list[dict[str, Any]]], None], batch_size: int) -> int:
        """Insert the oldest segment nobody is writing, then delete it; the number of rows it held.

        With no other segment waiting, this process's active one is sealed and
        replayed. 0 when there is nothing to replay. Whatever ``insert`` raises
        propagates, and the segment stays for the next attempt.
        """
        with self._lock:
            segments = self._sealed()
            if not segments and self._offset:
                self._seal()
                segments = self._sealed()
        for path in segments:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # another process replayed it
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process is writing or replaying it
                if not path.exists():
                    continue
                with os.fdopen(os.dup(fd), "rb") as file:
                    data = file.read()
                rows = self._parse(path, data)
                for start in range(0, len(rows), batch_size):
                    insert(rows[start : start + batch_size])
                path.unlink()
                fsync_directory(self.directory)
            finally:
                os.close(fd)
            with self._lock:
                self.rows = max(0, self.rows - data.count(b"\n"))
                self.bytes = max(0, self.bytes - len(data))
            return len(rows)
        return 0

    def _sealed(self) -> list[Path]:
        try:
            paths = sorted(self.directory.glob(f"*{self._suffix}"))
        except OSError:
            return []
        return [p for p in paths if p != self._path]

    def _parse(self, path: Path, data: bytes) -> list[dict[str, Any]]:
        rows = []
        for number, line in enumerate(data.split(b"\n"), start=1):
            if not line:
                continue
            try:
                row = json.loads(line)
                for column in self._datetime_columns & row.keys():
                    if row[column] is not None:
                        row[column] = datetime.fromisoformat(row[column])
            except (ValueError, TypeError):
                # Only a crash mid-append leaves a line like this, and its rows
                # were never counted durable (they were still held in memory).
                log.warning("skipping a torn line %d of spool segment %s", number, path.name)
                continue
            rows.append(row)
        return rows


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot spool a {type(value).__name__}")
