"""A damaged study journal: a torn last record is backed up and cut off, other damage stops naming the line.

Every journal here is a real one, written by Optuna; the damage is done to it afterwards, as a
process killed mid-write or a full disk would leave it.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from rampsearch.errors import UserError
from rampsearch.search import journal
from rampsearch.search.journal import BACKUP_SUFFIX, LOCK_SUFFIX, check_journal
from rampsearch.search.study import JOURNAL, open_storage

pytestmark = pytest.mark.faults

STUDY = "s"
X = {"x": FloatDistribution(0, 1)}
TRIALS = 3


def _lock(path: Path) -> JournalFileOpenLock:
    return JournalFileOpenLock(str(path))  # as open_storage locks it


def _storage(path: Path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=_lock(path)))


def _journal(run_dir: Path) -> Path:
    """A run directory's journal holding TRIALS complete trials with user attrs; the last record is the last tell."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / JOURNAL
    study = optuna.create_study(study_name=STUDY, storage=_storage(path))
    for number in range(TRIALS):
        trial = study.ask(X)
        trial.set_user_attr("note", f"trial {number}, naïve")
        study.tell(trial, float(number))
    return path


def _lines(data: bytes) -> list[bytes]:
    """The journal's lines as Optuna splits them (on b"\\n" only), each with its b"\\n"."""
    return [line + b"\n" for line in data.split(b"\n")[:-1]]


def _trials(path: Path) -> list[tuple[Any, ...]]:
    study = optuna.load_study(study_name=STUDY, storage=_storage(path))
    return [(t.number, t.state, t.values, t.params, t.user_attrs) for t in study.trials]


def _backups(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}{BACKUP_SUFFIX}*"))


class _NoLock:
    """A lock a sound or otherwise-damaged journal's check must never take."""

    grace_period = 30

    def acquire(self) -> bool:
        raise AssertionError("check_journal took the lock")

    def release(self) -> None:
        raise AssertionError("check_journal released a lock")


@contextmanager
def _unconfigured_logging() -> Iterator[None]:
    """Logging as a plain `rampsearch` run has it: no handler anywhere (pytest's own set aside)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        yield
    finally:
        root.handlers[:] = saved


# -- Optuna's journal, as rampsearch relies on it ---------------------------------------------------

def test_optuna_alone_appends_onto_a_torn_record(tmp_path):
    """The fault this module exists for: Optuna skips a torn last line, then writes onto its end."""
    path = _journal(tmp_path)
    path.write_bytes(path.read_bytes()[:-10])
    study = optuna.load_study(study_name=STUDY, storage=_storage(path))  # no error: the torn line is skipped
    study.set_user_attr("after", 1)
    glued = _lines(path.read_bytes())[-1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(glued)


def test_lock_file_is_the_one_optuna_creates(tmp_path):
    path = _journal(tmp_path)
    lock = _lock(path)
    lock.acquire()
    try:
        assert os.path.exists(f"{path}{LOCK_SUFFIX}")
    finally:
        lock.release()
    assert not os.path.lexists(f"{path}{LOCK_SUFFIX}")


# -- a torn last record -----------------------------------------------------------------------------

CUTS: dict[str, Callable[[bytes], bytes]] = {
    "first byte only": lambda line: line[:1],
    "half": lambda line: line[:len(line) // 2],
    "all but the newline": lambda line: line[:-1],  # valid JSON, but Optuna never read a line without its \n
    "zeros after a power loss": lambda line: bytes(len(line)),
}


@pytest.mark.parametrize("cut", CUTS.values(), ids=CUTS.keys())
def test_a_torn_last_record_is_backed_up_and_cut_off(tmp_path, capsys, cut):
    path = _journal(tmp_path / "run")
    full = _trials(path)
    lines = _lines(path.read_bytes())
    intact = b"".join(lines[:-1])
    expected = _trials(_journal_of(tmp_path / "intact", intact))
    # The last record is the last trial's tell: without it that trial is still running, attrs and all.
    assert expected[:-1] == full[:-1]
    assert expected[-1] == (TRIALS - 1, TrialState.RUNNING, None, full[-1][3], full[-1][4])
    damaged = intact + cut(lines[-1])
    path.write_bytes(damaged)

    with _unconfigured_logging():
        check_journal(path, _lock(path))
    warning = capsys.readouterr().err

    [backup] = _backups(path)
    assert backup.read_bytes() == damaged
    assert path.read_bytes() == intact
    assert str(path) in warning and str(backup) in warning
    assert f"dropped its last {len(damaged) - len(intact)} bytes" in warning
    assert _trials(path) == expected

    study = optuna.load_study(study_name=STUDY, storage=_storage(path))
    trial = study.ask(X)
    trial.set_user_attr("note", "after the mend")
    study.tell(trial, 9.0)
    after = _trials(path)
    assert after[:-1] == expected
    assert after[-1][:3] == (TRIALS, TrialState.COMPLETE, [9.0])
    assert after[-1][4] == {"note": "after the mend"}
    assert all(json.loads(line) for line in _lines(path.read_bytes()))
    check_journal(path, _NoLock())  # sound again
    assert _backups(path) == [backup]


def _journal_of(run_dir: Path, data: bytes) -> Path:
    run_dir.mkdir(parents=True)
    path = run_dir / JOURNAL
    path.write_bytes(data)
    return path


def test_a_torn_multibyte_character_is_cut_off(tmp_path):
    path = _journal(tmp_path)
    intact = path.read_bytes()
    record = json.dumps({"op_code": 2, "worker_id": "w", "study_id": 0, "user_attr": {"k": "é"}},
                        ensure_ascii=False).encode()
    torn = intact + record[:record.index("é".encode()) + 1]  # half of the é's two bytes
    path.write_bytes(torn)
    check_journal(path, _lock(path))
    assert path.read_bytes() == intact and _backups(path)[0].read_bytes() == torn


def test_a_mend_never_writes_over_an_earlier_backup(tmp_path, monkeypatch):
    monkeypatch.setattr(journal.time, "strftime", lambda _format: "20250101-000000")
    path = _journal(tmp_path)
    earlier = [path.with_name(f"{JOURNAL}{BACKUP_SUFFIX}20250101-000000{tail}") for tail in ("", "-2")]
    for backup in earlier:
        backup.write_bytes(b"an earlier backup")
    torn = path.read_bytes()[:-3]
    path.write_bytes(torn)
    check_journal(path, _lock(path))
    assert [b.read_bytes() for b in earlier] == [b"an earlier backup"] * 2
    assert path.with_name(f"{JOURNAL}{BACKUP_SUFFIX}20250101-000000-3").read_bytes() == torn


# -- sound journals, and damage that is not a torn last record --------------------------------------

def test_a_sound_missing_or_empty_journal_is_left_alone_without_the_lock(tmp_path):
    check_journal(tmp_path / JOURNAL, _NoLock())
    assert not (tmp_path / JOURNAL).exists()
    (tmp_path / JOURNAL).touch()
    check_journal(tmp_path / JOURNAL, _NoLock())
    path = _journal(tmp_path)
    data = path.read_bytes()
    check_journal(path, _NoLock())
    assert path.read_bytes() == data and not _backups(path)


def test_crlf_line_ends_are_sound_for_optuna_and_the_check(tmp_path):
    path = _journal(tmp_path)
    expected = _trials(path)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    check_journal(path, _NoLock())
    assert _trials(path) == expected


def _glued(line: bytes) -> bytes:
    """What Optuna made of a torn record before this check: the next record written onto its end."""
    return line[:len(line) // 2] + line


BAD_LINES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "not JSON": (lambda line: b"garbage\n", "is not valid JSON"),
    "a torn record with the next one glued on": (_glued, "is not valid JSON"),
    "not UTF-8": (lambda line: b'{"op_code": 8, "x": "\xff"}\n', "is not valid JSON"),
    "a JSON array": (lambda line: b"[1, 2]\n", "is not a journal record"),
    "an object with no op_code": (lambda line: b"{}\n", "is not a journal record"),
    "an empty line": (lambda line: b"\n", "is not valid JSON"),
}


@pytest.mark.parametrize("where", ["middle", "last"])
@pytest.mark.parametrize("bad", BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_damaged_complete_line_stops_naming_the_file_and_line(tmp_path, bad, where):
    garble, defect = bad
    path = _journal(tmp_path)
    lines = _lines(path.read_bytes())
    index = 3 if where == "middle" else len(lines) - 1
    lines[index] = garble(lines[index])
    data = b"".join(lines)
    path.write_bytes(data)
    number = index + 1
    with pytest.raises(UserError) as error:
        check_journal(path, _NoLock())
    message = str(error.value)
    assert str(path) in message and f"line {number} {defect}" in message
    assert f"head -n {number - 1} {path}" in message  # what the user can do, with the right line count
    assert path.read_bytes() == data and not _backups(path)


def test_damage_before_a_torn_tail_stops_without_mending(tmp_path):
    path = _journal(tmp_path)
    lines = _lines(path.read_bytes())
    lines[2] = b"garbage\n"
    data = b"".join(lines)[:-5]
    path.write_bytes(data)
    with pytest.raises(UserError, match="line 3 is not valid JSON"):
        check_journal(path, _NoLock())
    assert path.read_bytes() == data and not _backups(path)


def test_the_suggested_fix_for_a_damaged_line_loads(tmp_path):
    path = _journal(tmp_path)
    lines = _lines(path.read_bytes())
    lines[-1] = _glued(lines[-1])
    path.write_bytes(b"".join(lines))
    with pytest.raises(UserError) as error:
        check_journal(path, _NoLock())
    keep = int(str(error.value).split("head -n ")[1].split()[0])
    path.write_bytes(b"".join(lines[:keep]))  # what the suggested `head -n` leaves
    check_journal(path, _NoLock())
    assert [t[1] for t in _trials(path)] == [TrialState.COMPLETE] * (TRIALS - 1) + [TrialState.RUNNING]


# -- other processes: a live writer, a killed one ---------------------------------------------------

class _SpyLock:
    """The journal's real lock, telling the test when check_journal asks for it."""

    def __init__(self, path: Path) -> None:
        self._lock = _lock(path)
        self.grace_period = self._lock.grace_period
        self.asked = threading.Event()

    def acquire(self) -> bool:
        self.asked.set()
        return self._lock.acquire()

    def release(self) -> None:
        self._lock.release()


def _a_record(path: Path, tmp_path: Path) -> bytes:
    """A genuine next record for journal `path` (a study user attr), written by Optuna on a copy."""
    copy = _journal_of(tmp_path / "copy", path.read_bytes())
    optuna.load_study(study_name=STUDY, storage=_storage(copy)).set_user_attr("k", "v")
    return copy.read_bytes()[len(path.read_bytes()):]


def test_a_record_being_written_is_not_taken_for_a_torn_one(tmp_path, caplog):
    path = _journal(tmp_path / "run")
    before, record = path.read_bytes(), _a_record(path, tmp_path)
    writer = _lock(path)
    writer.acquire()  # a live process, halfway through appending a record
    with path.open("ab") as out:
        out.write(record[:10])
    checker, failure = _SpyLock(path), []

    def check() -> None:
        try:
            check_journal(path, checker)
        except BaseException as exc:  # handed to the test thread, which asserts there is none
            failure.append(exc)

    thread = threading.Thread(target=check)
    thread.start()
    try:
        assert checker.asked.wait(timeout=10), "check_journal did not wait for the lock of a torn-looking journal"
        with path.open("ab") as out:
            out.write(record[10:])
    finally:
        writer.release()
        thread.join(timeout=30)
    assert not thread.is_alive() and not failure
    assert path.read_bytes() == before + record and not _backups(path)
    assert "torn" not in caplog.text
    assert optuna.load_study(study_name=STUDY, storage=_storage(path)).user_attrs == {"k": "v"}


def test_a_lock_left_by_a_killed_writer_delays_the_mend_only_by_its_grace_period(tmp_path, caplog):
    path = _journal(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    lock_file = Path(f"{path}{LOCK_SUFFIX}")
    lock_file.touch()  # the writer was killed holding the lock, as it always holds it while writing
    old = time.time() - 3600
    os.utime(lock_file, (old, old))
    with pytest.warns(UserWarning, match="grace_period"):  # Optuna's caution against short grace periods
        lock = JournalFileOpenLock(str(path), grace_period=1)
    start = time.monotonic()
    check_journal(path, lock)
    assert time.monotonic() - start < 10
    assert path.read_bytes() == b"".join(_lines(data)[:-1]) and len(_backups(path)) == 1
    assert not lock_file.exists()
    assert f"waiting for the journal lock {lock_file}" in caplog.text
    assert "removes a lock left unchanged for 1 s" in caplog.text


# -- speed ------------------------------------------------------------------------------------------

RECORDS = 10_000


@pytest.mark.parametrize("torn", [False, True], ids=["sound", "torn"])
def test_ten_thousand_records_are_checked_in_well_under_a_second(tmp_path, torn):
    path = _journal(tmp_path)
    records = (json.dumps({"op_code": 8, "worker_id": "0-w", "trial_id": n % TRIALS,
                           "user_attr": {f"epoch_{n}": {"top1": n / 7, "loss": 1 / (n + 1)}}},
                          separators=(",", ":")) + "\n" for n in range(RECORDS))
    with path.open("a") as out:
        out.writelines(records)
    if torn:
        with path.open("ab") as out:
            out.write(b'{"op_code":8,"wor')
    start = time.perf_counter()
    check_journal(path, _lock(path))
    assert time.perf_counter() - start < 0.5
    assert len(_backups(path)) == torn


# -- end to end, through the study layer ------------------------------------------------------------

def test_open_storage_mends_a_torn_journal(tmp_path):
    path = _journal(tmp_path)
    path.write_bytes(path.read_bytes()[:-5])
    study = optuna.load_study(study_name=STUDY, storage=open_storage(tmp_path, None))
    assert len(_backups(path)) == 1
    study.set_user_attr("after", 1)
    assert optuna.load_study(study_name=STUDY, storage=open_storage(tmp_path, None)).user_attrs == {"after": 1}
