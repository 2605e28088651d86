"""A study storage damaged on disk (a journal line cut short or not JSON, a sqlite file half written or
with a bad page) is refused in one line naming the file, and never written to: real Optuna files,
damaged as a killed worker or a full disk leaves them, read through src.search.storage.make_storage and
through the sweep CLI. A worker's append in progress is not damage."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from src.search.storage import GuardedJournalFile, RetryStaleTrial, make_storage
from src.search.storage_damage import DamagedStorage

from tests.cli import env
from tests.disks import fill_up, small_disk  # noqa: F401  (small_disk: a fixture)
from tests.test_sweep import _cmd


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _journal_study(path: Path, trials: int = 3) -> None:
    """A real journal file, written by Optuna itself: a study with finished trials."""
    study = optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(JournalFileBackend(str(path))))
    for i in range(trials):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, float(i))


def _sqlite_study(path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    study = optuna.create_study(study_name="s", storage=storage)
    for i in range(3):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, float(i))
    storage.engine.dispose()


@pytest.fixture(scope="module")
def journal(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("journal") / "whole.log"
    _journal_study(path)
    return path


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "whole.db"
    _sqlite_study(path)
    return path


def _cut_mid_line(data: bytes) -> tuple[bytes, int]:
    """`data` cut in the middle of its last line, and the number of that line."""
    lines = data.split(b"\n")[:-1]
    return b"\n".join(lines[:-1]) + b"\n" + lines[-1][: len(lines[-1]) // 2], len(lines)


def test_a_journal_cut_mid_line_is_refused_naming_the_file_and_line_and_left_untouched(journal, tmp_path):
    damaged, line = _cut_mid_line(journal.read_bytes())
    path = tmp_path / "study.log"
    path.write_bytes(damaged)
    before = _digest(path)
    with pytest.raises(DamagedStorage) as err:
        make_storage(f"journal:{path}", 20, 60)
    message = str(err.value)
    assert f"{path} is damaged: line {line} is cut short" in message and "\n" not in message
    keep = int(message.split("truncate -s ")[1].split()[0])
    assert _digest(path) == before
    # what the message says to do works: the whole lines before it are a study Optuna reads
    os.truncate(path, keep)
    storage = make_storage(f"journal:{path}", 20, 60)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3


@pytest.mark.parametrize("bad", [b"garbage\n", b"\n", b"[1, 2]\n", b"\xff\xfe\n"])
def test_a_journal_line_that_is_not_a_json_object_is_refused(journal, tmp_path, bad):
    lines = journal.read_bytes().split(b"\n")
    path = tmp_path / "study.log"
    path.write_bytes(b"\n".join(lines[:2]) + b"\n" + bad + b"\n".join(lines[2:]))
    before = _digest(path)
    with pytest.raises(DamagedStorage, match=rf"{path} is damaged: line 3 is not a JSON object"):
        make_storage(f"journal:{path}", 20, 60)
    assert _digest(path) == before


def test_a_worker_s_append_in_progress_is_not_damage(journal, tmp_path):
    """The check reads under the journal's lock, which every append holds: a half line seen there is
    a write still going on, and the check waits for it instead of refusing the file."""
    path = tmp_path / "study.log"
    shutil.copy(journal, path)
    writer = GuardedJournalFile(path)
    whole = b'{"op_code":0,"worker_id":"w","study_name":"t","directions":[1]}\n'
    writer.lock.acquire()  # another worker, midway through its append
    with open(path, "ab") as f:
        f.write(whole[:20])
    outcome: list[BaseException | None] = []

    def check() -> None:
        try:
            make_storage(f"journal:{path}", 20, 60)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001
            outcome.append(err)

    reader = threading.Thread(target=check)
    reader.start()
    with open(path, "ab") as f:
        f.write(whole[20:])  # the append completes, then the lock is let go
    writer.lock.release()
    reader.join(timeout=60)
    assert outcome == [None]


def test_nothing_is_appended_after_a_line_cut_short(journal, tmp_path):
    """A worker that died mid-append after this one opened the study: the next append is refused,
    not glued to the half line (which would make the file unreadable for good)."""
    path = tmp_path / "study.log"
    shutil.copy(journal, path)
    storage = make_storage(f"journal:{path}", 20, 60)
    study = optuna.load_study(study_name="s", storage=storage)
    with open(path, "ab") as f:
        f.write(b'{"op_code":4,"worker_id"')
    before = _digest(path)
    with pytest.raises(DamagedStorage, match=rf"{path} is damaged: line \d+ is cut short"):
        study.ask()
    assert _digest(path) == before


def test_a_journal_damaged_while_a_study_is_open_is_named_when_read(journal, tmp_path):
    path = tmp_path / "study.log"
    shutil.copy(journal, path)
    storage = make_storage(f"journal:{path}", 20, 60)
    study = optuna.load_study(study_name="s", storage=storage)
    lines = path.read_bytes().split(b"\n")
    with open(path, "ab") as f:  # another program's bad line, then a good one after it
        f.write(b"not json\n" + lines[-2] + b"\n")
    with pytest.raises(DamagedStorage, match=rf"{path} is damaged: line {len(lines)} is not a JSON object"):
        study.get_trials()


def test_an_append_the_full_disk_cuts_short_is_cut_back_off(journal, small_disk):
    """The disk fills in the middle of a journal line (the bytes that fit in the file's last block
    are written, the rest is refused): the half line is removed, the file is the whole lines it was,
    the error names it; with room again the study goes on."""
    from src.record.io import DiskFull

    disk = small_disk(256)
    path = disk / "study.log"
    shutil.copy(journal, path)
    study = optuna.load_study(study_name="s", storage=make_storage(f"journal:{path}", 20, 60))
    size = path.stat().st_size  # padded by a real write so that 2000 bytes of the last block are free
    study.set_user_attr("pad", "")
    line = path.stat().st_size - size
    study.set_user_attr("pad", "p" * ((2096 - size - 2 * line) % 4096))
    room = -path.stat().st_size % 4096
    assert room == 2000  # the line below starts in the last block and does not fit in it
    fill_up(disk)
    before = path.read_bytes()
    with pytest.raises(DiskFull) as err:
        study.set_user_attr("note", "x" * (room + 1000))
    assert err.value.path == path and path.read_bytes() == before
    (disk / "filler").unlink()
    study.set_user_attr("note", "x" * (room + 1000))
    reread = optuna.load_study(study_name="s", storage=make_storage(f"journal:{path}", 20, 60))
    assert reread.user_attrs["note"] == "x" * (room + 1000) and len(reread.trials) == 3


@pytest.mark.parametrize("damage, says", [
    ("half", "database disk image is malformed"),
    ("garbage", "file is not a database"),
    ("bad page", "sqlite's check finds"),
])
def test_a_damaged_sqlite_file_is_refused_and_left_untouched(sqlite, tmp_path, damage, says):
    data = bytearray(sqlite.read_bytes())
    if damage == "half":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    else:  # a b-tree page's cell pointers overwritten: the header is fine, sqlite's check is not
        page = 4096 * 5
        data[page + 8: page + 40] = b"\xff" * 32
    path = tmp_path / "optuna.db"
    path.write_bytes(bytes(data))
    before = _digest(path)
    with pytest.raises(DamagedStorage) as err:
        make_storage(f"sqlite:///{path}", 20, 60)
    assert f"{path} is damaged" in str(err.value) and says in str(err.value) and "\n" not in str(err.value)
    assert _digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db"]


def test_a_sqlite_file_left_mid_transaction_is_not_damage(sqlite, tmp_path):
    """A process killed inside a transaction leaves a hot journal beside the database: sqlite rolls
    it back when the file is next opened for writing. That is sqlite working, not damage."""
    path = tmp_path / "optuna.db"
    shutil.copy(sqlite, path)
    code = ("import os, sqlite3, sys\n"
            "con = sqlite3.connect(sys.argv[1]); con.execute('PRAGMA cache_size=1'); con.execute('BEGIN')\n"
            "for i in range(3000): con.execute('insert into studies(study_name) values (?)', (f's{i}',))\n"
            "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    assert (tmp_path / "optuna.db-journal").is_file()
    study = optuna.load_study(study_name="s", storage=make_storage(f"sqlite:///{path}", 20, 60))
    assert len(study.trials) == 3 and len(optuna.get_all_study_names(f"sqlite:///{path}")) == 1


def test_whole_storages_and_new_files_open(sqlite, journal, tmp_path):
    shutil.copy(sqlite, tmp_path / "a.db")
    shutil.copy(journal, tmp_path / "a.log")
    for url in (f"sqlite:///{tmp_path / 'a.db'}", f"journal:{tmp_path / 'a.log'}"):
        assert len(optuna.load_study(study_name="s", storage=make_storage(url, 20, 60)).trials) == 3
    (tmp_path / "empty.db").touch()  # sqlite takes an empty file for an empty database
    for url in (f"sqlite:///{tmp_path / 'new.db'}", f"sqlite:///{tmp_path / 'empty.db'}", f"journal:{tmp_path / 'new.log'}"):
        optuna.create_study(storage=make_storage(url, 20, 60))


def test_a_database_is_held_to_the_schema_once_per_process_and_another_schema_is_one_line(tmp_path, monkeypatch):
    # A sweep's trials in the sweeper's own process each open the study's database: checking its
    # tables against this Optuna's schema every time read Alembic's scripts 20 times (1.2 s a sweep)
    import sqlite3

    from optuna.storages._rdb.storage import _VersionManager

    from src.config import ConfigError
    from src.search import storage as storage_module

    checked: list[str] = []
    real = _VersionManager.check_table_schema_compatibility
    monkeypatch.setattr(_VersionManager, "check_table_schema_compatibility",
                        lambda self: checked.append(self.url) or real(self))
    monkeypatch.setattr(storage_module, "_SCHEMA_CHECKED", set())
    urls = [f"sqlite:///{tmp_path / name}" for name in ("a.db", "a.db", "b.db")]
    for url in urls:
        make_storage(url, 20, 60).engine.dispose()
    assert checked == [urls[0], urls[2]]
    # tables of another Optuna's schema: one line naming the setting, in a process that had not checked them
    con = sqlite3.connect(tmp_path / "a.db")
    con.execute("update alembic_version set version_num = 'v99.0.0.a'")
    con.commit()
    con.close()
    storage_module._SCHEMA_CHECKED.clear()
    with pytest.raises(ConfigError, match=r"^hydra.sweeper.storage=sqlite:///.*a\.db: .*no longer compatible with the table schema") as err:
        make_storage(urls[0], 20, 60)
    assert "\n" not in str(err.value) and "optuna storage upgrade" in str(err.value)


@pytest.mark.slow  # end-to-end subprocess run(s): moved out of the fast tier (8 min on a 2-core host half as fast)
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_the_sweep_cli_refuses_a_damaged_storage_in_one_line(journal, sqlite, tmp_path, kind):
    if kind == "journal":
        path = tmp_path / "study.log"
        path.write_bytes(_cut_mid_line(journal.read_bytes())[0])
        storage = f"journal:{path}"
    else:
        path = tmp_path / "optuna.db"
        path.write_bytes(sqlite.read_bytes()[:40000])
        storage = f"sqlite:///{path}"
    before = _digest(path)
    out = tmp_path / "study"
    proc = subprocess.run(_cmd(out, 2, f"hydra.sweeper.storage={storage}"), cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: the study storage {path} is damaged: ")
    assert _digest(path) == before and not list(out.glob("*_layerwise"))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_dead_trial_is_queued_once_and_the_log_says_when_it_is_not(caplog):
    study = optuna.create_study(direction="maximize")
    retry = RetryStaleTrial(max_retry=1)
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1)})
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    with caplog.at_level("WARNING", logger="src.search.storage"):
        retry(study, study.trials[0])
    assert "trial 0: its worker stopped sending heartbeats; failed, and its parameters queued once more" in caplog.text
    again = study.ask()  # the queued retry
    assert again.number == 1 and again.user_attrs["retry_of"] == 0
    study.tell(again, state=optuna.trial.TrialState.FAIL)
    caplog.clear()
    with caplog.at_level("WARNING", logger="src.search.storage"):
        retry(study, study.trials[1])
    assert "queued once more" not in caplog.text
    assert "trial 1: its worker stopped sending heartbeats; failed, and not queued again: it was already a " \
           "retry of trial 0's parameters (1 retry at most)" in caplog.text
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]  # nothing queued the second time


def test_the_storage_a_sweep_names_is_a_url_optunas_own_readers_take(tmp_path):
    # Cut at its last '@' to hide the password, a server's URL was shown as 'db.example:5432/studies',
    # in the sweep's first line and in study.json: no driver, no user, nothing optuna.load_study,
    # the optuna CLI or optuna-dashboard can open.
    from sqlalchemy.engine import make_url

    from hydra_plugins.ft_optuna_sweeper._report import shown_url

    given = "postgresql+psycopg://me:s3cr%40t@db.example:5432/studies"
    shown = make_url(shown_url(given))
    assert "s3cr" not in shown_url(given) and shown.password is None
    full = make_url(given)
    assert (shown.drivername, shown.username, shown.host, shown.port, shown.database) == (
        full.drivername, full.username, full.host, full.port, full.database)
    db = f"sqlite:///{tmp_path / 'optuna.db'}"  # a file's URL has no password: shown as it is, and opens
    optuna.create_study(study_name="s", storage=db)
    assert shown_url(db) == db and optuna.load_study(study_name="s", storage=shown_url(db)).study_name == "s"
