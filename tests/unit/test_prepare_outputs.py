"""`PreparedData.write` writes its outputs as one set: a failure part-way leaves the previous set as it was."""

import os

import pandas as pd
import pytest

from embedpipe import storage
from embedpipe.evaluate import load_split
from embedpipe.fine_tune.data import read_training_data
from embedpipe.prepare import SPLITS
from tests.unit.test_prepare import CORPUS, QUERIES, jsonl, run_prepare, write_dataset

# As KFP names artifacts: siblings in the task's folder, no extension.
NAMES = ("corpus", "queries", "train_labels", "validation_labels", "test_labels", "report")


def write_set(prepared, out):
    prepared.write(
        str(out / "corpus"),
        str(out / "queries"),
        {split: str(out / f"{split}_labels") for split in SPLITS},
        str(out / "report"),
    )


def snapshot(folder) -> dict[str, bytes]:
    """Every entry of the folder (hidden staging folders included) with its bytes."""
    return {p.name: p.read_bytes() if p.is_file() else b"<folder>" for p in sorted(folder.iterdir())}


@pytest.fixture
def old_and_new(tmp_path):
    """The set written from the default dataset, and a different dataset prepared but not yet written."""
    out = tmp_path / "out"
    write_set(run_prepare(write_dataset(tmp_path / "old")), out)
    bigger = jsonl(CORPUS + [{"_id": "d5", "text": "fifth"}])
    new = run_prepare(write_dataset(tmp_path / "new", corpus=bigger, queries=jsonl(QUERIES[:4]), test="q4\td5\t1\n"))
    return out, new


def fail_on_call(monkeypatch, owner, name, n):
    """Makes the n-th call of `owner.name` raise (the calls before and after it work)."""
    original, calls = getattr(owner, name), []

    def patched(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise OSError(f"injected failure of {name} call {n}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, patched)
    return calls


def test_a_failure_writing_the_third_file_leaves_the_previous_set(old_and_new, monkeypatch):
    out, new = old_and_new
    before = snapshot(out)
    assert sorted(before) == sorted(NAMES)
    fail_on_call(monkeypatch, pd.DataFrame, "to_parquet", 3)
    with pytest.raises(OSError, match="to_parquet call 3"):
        write_set(new, out)
    assert snapshot(out) == before, "the old set must be intact and no staging folder left behind"


@pytest.mark.parametrize("failing_rename", [2, 5, 6, 11])
def test_a_failure_while_renaming_undoes_the_renames_done(old_and_new, monkeypatch, failing_rename):
    """Each output is two renames (old one aside, new one in); whichever fails, the old set comes back."""
    out, new = old_and_new
    before = snapshot(out)
    fail_on_call(monkeypatch, storage.os, "replace", failing_rename)
    with pytest.raises(OSError, match=f"replace call {failing_rename}"):
        write_set(new, out)
    monkeypatch.undo()
    assert snapshot(out) == before


def test_a_first_write_that_fails_leaves_nothing(tmp_path, monkeypatch):
    prepared = run_prepare(write_dataset(tmp_path / "data"))
    fail_on_call(monkeypatch, pd.DataFrame, "to_parquet", 3)
    with pytest.raises(OSError):
        write_set(prepared, tmp_path / "out")
    assert snapshot(tmp_path / "out") == {}


def test_the_new_set_replaces_the_old_one_whole_and_the_readers_read_it(old_and_new):
    out, new = old_and_new
    write_set(new, out)
    assert sorted(snapshot(out)) == sorted(NAMES)
    corpus, queries, test = load_split(str(out / "corpus"), str(out / "queries"), str(out / "test_labels"))
    assert (len(corpus), len(queries), test["corpus-id"].tolist()) == (5, 4, ["d5"])
    data = read_training_data(str(out / "corpus"), str(out / "queries"), str(out / "train_labels"), batch_size=1)
    assert len(data.corpus) == 5 and len(data.train_labels) == 3
    assert "| corpus documents | 5 |" in (out / "report").read_text()


def test_writing_the_same_data_again_gives_the_same_files(tmp_path):
    prepared = run_prepare(write_dataset(tmp_path / "data"))
    write_set(prepared, tmp_path / "out")
    first = snapshot(tmp_path / "out")
    write_set(prepared, tmp_path / "out")
    assert snapshot(tmp_path / "out") == first


def test_atomic_paths_replaces_folders_too_and_refuses_one_path_twice(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "old.txt").write_text("old")
    with storage.atomic_paths([tmp_path / "a", tmp_path / "b.txt"]) as (folder, file):
        folder.mkdir()
        (folder / "new.txt").write_text("new")
        file.write_text("b")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["a", "b.txt"]
    with pytest.raises(ValueError, match="different paths"):
        with storage.atomic_paths([tmp_path / "a", tmp_path / "x" / ".." / "a"]):
            pass
