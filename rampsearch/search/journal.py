"""Check a run directory's Optuna journal before Optuna opens it, and mend a torn last record.

Optuna's JournalFileBackend writes each operation as one JSON object on a line ending in "\\n",
appended under a lock file (the journal's path + ".lock"), and it reads back only lines that end
in "\\n". A process killed mid-write (or a full disk) leaves a last line without its "\\n": Optuna
skips it when reading, but the next append lands on the end of it, gluing both into one line that
is not JSON, and every later read fails with a bare JSONDecodeError naming no file. So, before the
storage is opened, `check_journal`:

- leaves a missing, empty or sound journal alone, without taking the lock;
- mends a torn last record: the whole damaged file is copied to a backup beside it (never over an
  earlier backup), then the journal is cut back to the end of its last complete record, with a
  warning naming both files and the bytes dropped. Nothing any complete record said is lost, and
  the dropped bytes were never read by Optuna, which ignores a line without its "\\n";
- stops at any other damage (a complete line that is not a journal record) with a UserError naming
  the file and the line, leaving the file as it is.

A record a live process is still writing looks torn for a moment. Writers append only while
holding the lock, so the journal is mended only if it is still torn once this process holds that
lock: then no write is in progress and the tail can only be a dead writer's remnant.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import UserError

log = logging.getLogger(__name__)

# The lock file Optuna's JournalFileOpenLock and JournalFileSymlinkLock create beside the journal
# (their LOCK_FILE_SUFFIX; tests/test_faults_journal.py pins it to the installed Optuna).
LOCK_SUFFIX = ".lock"
# A mended journal's backup: `study.journal.torn-20250101-120000` (with -2, -3... if taken).
BACKUP_SUFFIX = ".torn-"
# A live writer holds the lock for one write and fsync, milliseconds; a lock file still there after
# this long was probably left by a process killed while writing, and Optuna only removes such a
# lock after its grace period, so the wait is worth a warning.
LIVE_WRITE_S = 1.0
LOCK_POLL_S = 0.01  # how often the lock file is looked at meanwhile: a writer is done in about this long


class JournalLock(Protocol):
    """What Optuna's journal file locks (JournalFileOpenLock, JournalFileSymlinkLock) provide."""

    grace_period: int | None

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class _Scan:
    end: int  # bytes up to the end of the last complete record
    tail: int  # bytes after it: a last line without its "\n"


def check_journal(path: Path, lock: JournalLock) -> None:
    """Raise UserError if journal `path` is damaged beyond a torn last record; mend that one.

    Call it before the storage is opened. It takes `lock` only for a torn-looking journal, and may
    then wait for it up to the lock's grace period if a killed writer left the lock file behind.
    `lock` must be the lock the storage's JournalFileBackend writes under, so that a record another
    process is still writing is never mistaken for a torn one.
    """
    if not _scan(path).tail:
        return
    _note_a_held_lock(path, lock)
    lock.acquire()
    try:
        scan = _scan(path)  # no record is half-written while this process holds the lock
        if scan.tail:
            _mend(path, scan)
    finally:
        lock.release()


def _scan(path: Path) -> _Scan:
    """Where the journal's complete records end; UserError at the first complete line that is not one.

    Lines are split on b"\\n" only, as Optuna splits them: a "\\r" (a line ending in "\\r\\n" is a
    record as far as Optuna's json.loads is concerned) or a multi-byte UTF-8 character never splits
    or ends a line.
    """
    end = 0
    try:
        with path.open("rb") as journal:
            for number, line in enumerate(journal, start=1):
                if not line.endswith(b"\n"):  # only the last line read can lack it
                    return _Scan(end, len(line))
                defect = _defect(line)
                if defect:
                    raise UserError(_damaged(path, number, defect))
                end += len(line)
    except FileNotFoundError:
        pass
    return _Scan(end, 0)


def _defect(line: bytes) -> str | None:
    """Why `line` is not a record Optuna's JournalStorage can replay, or None if it is one."""
    try:
        record = json.loads(line)  # as Optuna parses it: bytes in, encoding detected
    except ValueError:  # JSONDecodeError, or UnicodeDecodeError for bytes that are no text
        return "is not valid JSON"
    if not isinstance(record, dict) or "op_code" not in record:
        return "is not a journal record (a JSON object with an op_code)"
    return None


def _damaged(path: Path, number: int, defect: str) -> str:
    keep = number - 1
    return (f"study journal {path} is damaged: line {number} {defect}, so Optuna cannot read the study "
            f"past it. Restore {path.name} from a backup, or, with no search using it, keep only its "
            f"first {keep} lines (`head -n {keep} {path} > {path}.fixed && mv {path}.fixed {path}`), "
            f"which drops everything recorded from line {number} on")


def _note_a_held_lock(path: Path, lock: JournalLock) -> None:
    """Warn if the lock stays held: the wait for it may then last Optuna's whole grace period."""
    lock_file = f"{path}{LOCK_SUFFIX}"
    deadline = time.monotonic() + LIVE_WRITE_S
    while os.path.lexists(lock_file) and time.monotonic() < deadline:
        time.sleep(LOCK_POLL_S)
    if os.path.lexists(lock_file):
        removal = (f"Optuna removes a lock left unchanged for {lock.grace_period} s" if lock.grace_period
                   else "this lock has no grace period: delete the lock file if no process is writing")
        log.warning("waiting for the journal lock %s: a process is writing %s, or was killed while "
                    "writing it; %s", lock_file, path.name, removal)


def _mend(path: Path, scan: _Scan) -> None:
    """Back up the whole journal, then cut its torn last record off (the lock is held)."""
    backup = _backup(path)
    # Cut in place rather than write a cut copy and os.replace it: the backup holding every byte is
    # on disk (file and directory entry fsynced) before the journal is touched, so a crash in
    # between leaves the torn journal, which the next check mends again; a single truncate cannot
    # half-happen; and the journal, possibly large, is not rewritten, nor its inode, mode or owner
    # changed. Complete records keep their byte offsets, which readers cache.
    with path.open("r+b") as journal:
        journal.truncate(scan.end)
        os.fsync(journal.fileno())
    log.warning("study journal %s ended in a torn record (a process was killed, or the disk filled, "
                "while writing it): dropped its last %d bytes, which Optuna never read; the damaged "
                "journal is kept whole in %s", path, scan.tail, backup)


def _backup(path: Path) -> Path:
    """Copy `path` to a new file beside it, fsynced; an earlier backup is never written over."""
    stem = f"{path.name}{BACKUP_SUFFIX}{time.strftime('%Y%m%d-%H%M%S')}"
    backup, attempt = path.with_name(stem), 1
    while True:
        try:
            out = backup.open("xb")
            break
        except FileExistsError:
            attempt += 1
            backup = path.with_name(f"{stem}-{attempt}")
    with out, path.open("rb") as journal:
        shutil.copyfileobj(journal, out)
        out.flush()
        os.fsync(out.fileno())
    _fsync_directory(path.parent)
    return backup


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
