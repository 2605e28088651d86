"""A sweep folder's study.json (which study the folder belongs to) rotted or edited: the sweep that
resumes there is refused in one line naming the file and what to write, leaving the folder as it was;
the report reports the runs without the search section and says why. Both were tracebacks
(json.loads on an empty file; `.get` on a list)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import optuna
import pytest

from src.config import ConfigError
from src.reporting.search import load_search
from src.search.study import claim_or_forget, claim_out_dir, open_study, study_exists

DAMAGES = {
    "empty": (b"", "empty file"),
    "cut": (b"{\"study\": \"s\", \"uid\": \"ab", "not valid JSON"),
    "a list": (b"[1, 2]", "not a JSON object (a list)"),
    "no uid": (b'{"study": "s", "storage": "sqlite:///x.db"}', "no 'uid' string"),
    "a number for the study": (b'{"study": 5, "uid": "ab", "storage": "sqlite:///x.db"}', "no 'study' string"),
}


@pytest.fixture()
def claimed(tmp_path):
    """A sweep folder claimed by study `s` in a real sqlite storage, and that study."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study(optuna.storages.RDBStorage(url), "s", ["maximize"], {"config": {}}, None, url)
    out = tmp_path / "sweep"
    claim_out_dir(out, study, url)
    return out, study, url


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_study_json_refuses_the_resume_in_one_line_and_is_kept(claimed, damage):
    out, study, url = claimed
    good = json.loads((out / "study.json").read_text())
    text, says = DAMAGES[damage]
    (out / "study.json").write_bytes(text)
    with pytest.raises(ConfigError) as err:
        claim_out_dir(out, study, url)
    line = str(err.value)
    assert "\n" not in line and f"{out}: its study.json" in line and says in line, line
    assert json.dumps(good) in line  # what to write back, if the folder is this study's
    assert (out / "study.json").read_bytes() == text and sorted(p.name for p in out.iterdir()) == ["study.json"]
    (out / "study.json").write_text(json.dumps(good))  # written back as the line says: resumes
    claim_out_dir(out, study, url)


@pytest.mark.parametrize("damage", DAMAGES)
def test_the_report_of_a_folder_with_a_damaged_study_json_has_no_search_section_and_says_why(
        claimed, damage, caplog):
    out, _, _ = claimed
    assert load_search(out) is not None
    text, says = DAMAGES[damage]
    (out / "study.json").write_bytes(text)
    with caplog.at_level(logging.WARNING):
        assert load_search(out) is None
    assert any(str(out / "study.json") in r.getMessage() and says in r.getMessage() for r in caplog.records)


def test_a_sweep_folder_whose_own_storage_was_deleted_says_so_not_another_storage(claimed):
    """The folder's optuna.db deleted (or replaced): the sweep made a new study of that name there and
    was refused with "the one in X (this sweep's study is in X): use the storage it was made with",
    the same X twice. The line says the storage lost the study and to restore it."""
    out, study, url = claimed
    Path(url.removeprefix("sqlite:///")).unlink()
    again = open_study(optuna.storages.RDBStorage(url), "s", ["maximize"], {"config": {}}, None, url)
    before = (out / "study.json").read_bytes()
    with pytest.raises(ConfigError) as err:
        claim_out_dir(out, again, url)
    line = str(err.value)
    assert "\n" not in line and f"which {url} no longer holds: that storage was deleted or replaced since" in line, line
    assert "(empty, made by an earlier command: remove it when you restore); restore the storage from a copy" in line, line
    assert (out / "study.json").read_bytes() == before


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_refused_sweep_takes_away_the_study_and_storage_file_it_made(tmp_path, kind):
    """The folder's own storage deleted, the same sweep again: refused, but it left a new storage file
    with an empty study of the folder's name, which the next command took for the folder's storage
    (a refused command writes nothing). What it made is taken away; another study's file is kept."""
    from src.search.storage import make_storage, storage_file

    file = tmp_path / ("optuna.db" if kind == "sqlite" else "journal.log")
    url = f"sqlite:///{file}" if kind == "sqlite" else f"journal:{file}"
    out = tmp_path / "sweep"
    claim_out_dir(out, open_study(make_storage(url, 60, 120), "s", ["maximize"], {"config": {}}, None, url), url)
    file.unlink()  # the folder's storage lost: a new one is made by the same command
    assert storage_file(url) == file and not file.exists()
    storage = make_storage(url, 60, 120)
    made_now = not study_exists(storage, "s")
    again = open_study(storage, "s", ["maximize"], {"config": {}}, None, url)
    with pytest.raises(ConfigError, match=r"\(empty, made by this command: removed again\); restore the storage"):
        claim_or_forget(out, again, url, storage, made_now, file)
    assert made_now and not file.exists() and sorted(p.name for p in out.iterdir()) == ["study.json"]
    # a storage file that holds another study too: only what this command made goes
    other = open_study(make_storage(url, 60, 120), "other", ["maximize"], {"config": {}}, None, url)
    storage = make_storage(url, 60, 120)
    again = open_study(storage, "s", ["maximize"], {"config": {}}, None, url)
    with pytest.raises(ConfigError):
        claim_or_forget(out, again, url, storage, True, file)
    assert file.exists() and optuna.get_all_study_names(make_storage(url, 60, 120)) == [other.study_name]
