"""The one atomic-write helper: readers see the old file or the new one, and the durability asked for."""

from __future__ import annotations

import os

import pytest

import common.atomic_files as atomic
from common.atomic_files import Durability, write_atomically, write_json_atomically


@pytest.fixture
def flushes(monkeypatch):
    calls = {"file": 0, "folder": 0}
    real_fdatasync, real_fsync_directory = os.fdatasync, atomic.fsync_directory

    def counting_fdatasync(fd):
        calls["file"] += 1
        real_fdatasync(fd)

    def counting_fsync_directory(path):
        calls["folder"] += 1
        real_fsync_directory(path)

    monkeypatch.setattr(atomic.os, "fdatasync", counting_fdatasync)
    monkeypatch.setattr(atomic, "fsync_directory", counting_fsync_directory)
    return calls


@pytest.mark.parametrize(
    ("durability", "file_flushes", "folder_flushes"),
    [(Durability.REPLACE_ONLY, 0, 0), (Durability.FILE, 1, 0), (Durability.FILE_AND_FOLDER, 1, 1)],
)
def test_each_durability_flushes_what_it_promises(tmp_path, flushes, durability, file_flushes, folder_flushes):
    target = write_atomically(tmp_path / "a" / "x.bin", [b"ab", memoryview(b"cd")], durability=durability)
    assert target.read_bytes() == b"abcd"
    assert (flushes["file"], flushes["folder"]) == (file_flushes, folder_flushes)


def test_a_writer_function_and_json(tmp_path):
    write_atomically(tmp_path / "f.bin", lambda handle: handle.write(b"from a writer"), durability=Durability.FILE)
    assert (tmp_path / "f.bin").read_bytes() == b"from a writer"
    write_json_atomically(tmp_path / "d.json", {"é": 1}, durability=Durability.FILE)
    assert (tmp_path / "d.json").read_text(encoding="utf-8") == '{\n  "é": 1\n}\n'


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")

    def broken(handle):
        handle.write(b"half")
        raise RuntimeError("disk pulled")

    with pytest.raises(RuntimeError):
        write_atomically(target, broken, durability=Durability.FILE_AND_FOLDER)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_the_temporary_file_is_hidden_and_named_as_asked(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: seen.append(os.path.basename(a)) or real_replace(a, b))
    write_atomically(tmp_path / "in-1.dcm", b"x", durability=Durability.FILE, temporary_suffix=".part")
    assert seen[0].startswith(".in-1.dcm.") and seen[0].endswith(".part")
