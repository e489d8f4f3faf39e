"""Writing a file whole or not at all: flows.core.files, and save and export through it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from flows.core import MAF, load, save
from flows.core.files import NotARegularFileError, atomic_file, atomic_path, file_kind


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_file_keeps_the_old_file_when_the_block_fails(tmp_path: Path):
    path = tmp_path / "a.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(path, "w") as file:
        file.write("half of the new")
        raise RuntimeError("stop")
    assert path.read_text() == "old"
    assert names(tmp_path) == ["a.csv"]


def test_atomic_writers_keep_the_mode_of_the_file_they_replace(tmp_path: Path):
    old = tmp_path / "old.csv"
    old.write_text("old")
    old.chmod(0o600)
    with atomic_file(old, "w") as file:
        file.write("new")
    assert old.read_text() == "new" and mode(old) == 0o600

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "new.txt") as staged:
            staged.write_text("new")
    finally:
        os.umask(mask)
    assert mode(tmp_path / "new.txt") == 0o644
    assert names(tmp_path) == ["new.txt", "old.csv"]


def test_atomic_path_refuses_a_target_that_became_special_meanwhile(tmp_path: Path):
    path = tmp_path / "s.csv"
    with (
        pytest.raises(NotARegularFileError, match=r"is a named pipe .* only regular files"),
        atomic_file(path, "w") as file,
    ):
        file.write("rows")
        os.mkfifo(path)
    assert stat.S_ISFIFO(path.lstat().st_mode)
    assert names(tmp_path) == ["s.csv"]


def test_atomic_path_into_a_missing_folder_names_it(tmp_path: Path):
    with (
        pytest.raises(FileNotFoundError, match=r"folder '.*missing' does not exist"),
        atomic_path(tmp_path / "missing" / "a.csv"),
    ):
        pass
    assert names(tmp_path) == []


def test_atomic_file_refuses_a_mode_that_does_not_write(tmp_path: Path):
    with (
        pytest.raises(ValueError, match="mode must open the file for writing"),
        atomic_file(tmp_path / "a.csv", "r"),
    ):
        pass


def test_file_kind_names_what_is_there():
    assert file_kind(stat.S_IFREG | 0o644) == "a regular file"
    assert file_kind(stat.S_IFLNK | 0o777) == "a symbolic link"
    assert file_kind(stat.S_IFDIR | 0o755) == "a folder"


def test_save_keeps_the_mode_of_the_checkpoint_it_replaces(tmp_path: Path, device):
    flow = MAF(features=2, transforms=1, hidden_features=[4]).to(device)
    path = tmp_path / "flow.pt"
    save(flow, path)
    path.chmod(0o600)
    save(flow, path, extra={"again": True})
    assert mode(path) == 0o600
    assert load(path).extra == {"again": True}
    assert names(tmp_path) == ["flow.pt"]


def test_save_never_writes_through_a_symbolic_link(tmp_path: Path, device):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    link = tmp_path / "flow.pt"
    link.symlink_to(precious)
    with pytest.raises(NotARegularFileError, match="is a symbolic link"):
        save(MAF(features=2, transforms=1, hidden_features=[4]).to(device), link)
    assert link.is_symlink() and precious.read_text() == "keep me"
    assert names(tmp_path) == ["flow.pt", "precious.txt"]


def test_export_never_replaces_a_folder(tmp_path: Path, device):
    from flows.core.export import export

    (tmp_path / "model.pt2").mkdir()
    flow = MAF(features=2, transforms=1, hidden_features=[4]).to(device)
    with pytest.raises(NotARegularFileError, match="is a folder"):
        export(flow, tmp_path / "model.pt2", check=False)
    assert (tmp_path / "model.pt2").is_dir() and names(tmp_path) == ["model.pt2"]
