"""edge.fsutil: atomic writes and lock files, as another local user could meet them."""

import os

import pytest

from edge.fsutil import atomic_write_text, take_lock


def test_an_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    """A site's label set or a config kept private (0600) came back readable to every user (0644)."""
    private, new, backup = tmp_path / "site.yaml", tmp_path / "new.yaml", tmp_path / "site.yaml.bak"
    private.write_text("name: a\n")
    private.chmod(0o600)
    atomic_write_text(private, "name: b\n")
    atomic_write_text(new, "name: c\n")
    atomic_write_text(backup, "name: a\n", like=private)
    old_umask = os.umask(0o022)
    os.umask(old_umask)
    modes = [p.stat().st_mode & 0o777 for p in (private, new, backup)]
    assert private.read_text() == "name: b\n" and modes == [0o600, 0o666 & ~old_umask, 0o600], modes


def test_a_lock_file_planted_as_a_symlink_is_not_followed(tmp_path):
    """take_lock truncated and stamped whatever a lock path linked to: a user who could write the state folder
    had a service run by root overwrite a file of root's."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lock = tmp_path / "serve.lock"
    lock.symlink_to(victim)
    with pytest.raises(OSError):
        take_lock(lock)
    assert victim.read_text() == "precious\n"
    os.close(take_lock(tmp_path / "real.lock"))  # a lock file of its own still works


def test_an_atomic_write_syncs_its_folder_after_the_rename(tmp_path, monkeypatch):
    """The file was synced, its rename was not: after a power cut the old file came back though the write
    had said it was done (a clip could outlive only under its temporary name, which a start removes)."""
    import stat

    import edge.fsutil

    synced = []
    fsync = os.fsync

    def noting(fd):
        mode = os.fstat(fd).st_mode
        synced.append((stat.S_ISDIR(mode), os.fstat(fd).st_ino, (tmp_path / "site.yaml").exists()))
        fsync(fd)

    monkeypatch.setattr(edge.fsutil.os, "fsync", noting)
    atomic_write_text(tmp_path / "site.yaml", "name: a\n")
    assert synced[0][0] is False and synced[-1] == (True, tmp_path.stat().st_ino, True), synced


def test_an_atomic_write_removes_what_a_killed_writer_of_it_left(tmp_path):
    """A writer killed between its temporary file and the rename (the embedding cache's .npz, calibrate's
    site set and its .bak) left the temporary for good: the next write of that target removes it once it
    has been untouched for an hour (a younger one may be a live writer's)."""
    import time

    from edge.fsutil import STALE_SECONDS, atomic_path

    target = tmp_path / "labels.npz"
    old, young = tmp_path / ".labels.npz.abcd1234.tmp.npz", tmp_path / ".labels.npz.efgh5678.tmp.npz"
    other = tmp_path / ".other.npz.abcd1234.tmp.npz"
    for leftover in (old, young, other):
        leftover.write_bytes(b"x" * 100)
    then = time.time() - STALE_SECONDS - 60
    for leftover in (old, other):
        os.utime(leftover, (then, then))
    with atomic_path(target, suffix=".npz") as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and not old.exists() and young.exists() and other.exists()
