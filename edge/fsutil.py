"""Atomic file and folder writes: a reader sees the old version or the new one, never half.

Every artifact (model.json, label embeddings, engines, bundles) is written to a temporary
name in the destination folder, flushed to disk, then renamed over the target.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STALE_SECONDS = 3600.0  # a temporary beside a target untouched this long is a killed writer's, not a live one's


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str = "", like: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` atomically.

    Whatever the body writes to the yielded path becomes `target` only if the body does not
    raise; otherwise the temporary file is removed and `target` is left as it was. The new file
    has the mode of the one it replaces, or of `like` (a copy's original) where given: a site's label
    set kept private stays so; else the usual one for the umask. `suffix` keeps an extension that a
    writer insists on (numpy's savez appends .npz).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target, STALE_SECONDS)  # a writer of it killed before: its temporary stayed
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        try:
            mode = stat.S_IMODE(os.stat(target if like is None else like).st_mode)
        except OSError:  # none there yet
            mode = 0o666 & ~_umask()  # mkstemp makes 0600: give the usual mode
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, target)
        sync_folder(target.parent)  # the rename itself: after a power cut the old file, or a clip under its temp name
    finally:
        tmp_path.unlink(missing_ok=True)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename or a new file in it outlives a power cut; where the file system
    cannot (a folder opened read-only that refuses fsync: EINVAL on some), it goes without."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LockHeld(Exception):
    """take_lock: another process holds the lock; `holder` is what it wrote into the file (its pid)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


HANDED_LOCKS_ENV = "SEMANTICAC_LOCK_FDS"  # locks a process kept open across its exec (hand_on), fds by ":"


def take_lock(path: str | Path) -> int:
    """The fd of `path` (made if need be) locked exclusively (flock, let go by the kernel however the
    process ends) and stamped with our pid; LockHeld when another process holds it, OSError when it
    cannot be made. A lock of `path` handed on across this process's exec (hand_on) is taken up as it is."""
    handed = _handed_lock(Path(path))
    if handed is not None:
        return handed
    # not through a symlink: a lock file planted as a link by another user had root truncate what it named
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LockHeld(holder) from None
    except OSError:  # a file system without flock (ENOLCK, EOPNOTSUPP): no fd left open for it
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # the pid is for the holder's message; the lock holds without it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def is_lock_of(path: str | Path, fd: int) -> bool:
    """Whether `fd` is the file at `path` (not one deleted or replaced since)."""
    try:
        here, held = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)


def hand_on(fd: int) -> None:
    """Keep the lock `fd` holds across this process's exec (a service's reload: it had been free for the
    fraction of a second between the two runs, and another serve took it): take_lock in the new run takes
    it up, and release_handed_locks closes those it does not."""
    os.set_inheritable(fd, True)
    os.environ[HANDED_LOCKS_ENV] = ":".join(filter(None, [os.environ.get(HANDED_LOCKS_ENV, ""), str(fd)]))


def _handed_lock(path: Path) -> int | None:
    fds = [int(fd) for fd in os.environ.get(HANDED_LOCKS_ENV, "").split(":") if fd.isdigit()]
    for fd in fds:
        if is_lock_of(path, fd):
            os.set_inheritable(fd, False)
            rest = ":".join(str(other) for other in fds if other != fd)
            os.environ[HANDED_LOCKS_ENV] = rest
            return fd
    return None


def release_handed_locks() -> None:
    """Close the locks handed on across the exec that the new run did not take up (its config moved them)."""
    for fd in os.environ.pop(HANDED_LOCKS_ENV, "").split(":"):
        with contextlib.suppress(OSError, ValueError):  # only a lock file's fd (the variable could be stale)
            if os.readlink(f"/proc/self/fd/{int(fd)}").endswith(".lock"):
                os.close(int(fd))


def remove_stale_temporaries(target: str | Path, older_than: float) -> int:
    """Remove what atomic_path / atomic_directory left beside `target` when a process writing it was
    killed (kill -9, power loss: `.{name}.XXXXXXXX.tmp`, a file or a folder), untouched for `older_than`
    seconds, so as not to take one a live writer still fills; return the bytes freed. A `.old` folder is
    never removed: killed between its two renames, atomic_directory leaves the previous version only there."""
    freed = 0
    for leftover in _made_beside(target, r"\.tmp(\.\w+)?"):
        try:
            if time.time() - leftover.stat().st_mtime < older_than:
                continue
            if leftover.is_dir():
                size = remove_tree(leftover)
            else:
                size = leftover.stat().st_size
                leftover.unlink()
        except OSError:
            continue
        freed += size
    return freed


def remove_tree(folder: Path) -> int:
    """Remove `folder` and all it holds; the bytes its files held. OSError when it cannot."""
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    shutil.rmtree(folder)
    return size


def previous_versions(target: str | Path) -> list[Path]:
    """`.old` folders beside `target` that atomic_directory left (killed between its two renames): the
    only copy of the version it was replacing, which a person moves back or away."""
    return sorted(_made_beside(target, r"\.old"))


def _made_beside(target: str | Path, suffix: str) -> list[Path]:
    """What atomic_path / atomic_directory name beside `target`: `.{name}.` + tempfile's 8 characters +
    `suffix` (a regular expression)."""
    target = Path(target)
    made = re.compile(rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}{suffix}")
    return [path for path in target.parent.glob(f".{glob.escape(target.name)}.*") if made.fullmatch(path.name)]


def atomic_write_bytes(target: str | Path, data: bytes, like: str | Path | None = None) -> None:
    with atomic_path(target, like=like) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str, like: str | Path | None = None) -> None:
    atomic_write_bytes(target, text.encode("utf-8"), like)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target`.

    An existing `target` is moved aside first and deleted only after the new folder is in
    place, so a failure at any point leaves either the old folder or the new one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700: give the usual mode
        if not target.exists():
            os.replace(tmp, target)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.replace(target, old / target.name)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old / target.name, target)  # put the previous version back
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def looked_at(path: str | Path) -> str:
    """For a path not found: " (looked at /abs/path: a relative path is read from the folder the
    command runs in)" when it is relative (a service runs in /, not where it was written), else ""."""
    path = Path(path)
    if path.is_absolute():
        return ""
    return f" (looked at {Path.cwd() / path}: a relative path is read from the folder the command runs in)"


def nearest_existing(path: str | Path) -> Path:
    """`path` itself when it exists, else the nearest folder above it that does (what a mkdir of it
    would be made in); OSError where a folder on the way cannot be entered."""
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def unwritable_reason(folder: str | Path) -> str | None:
    """None when `folder` exists or can be made, and a file can be created in it; else why not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        try:
            found = nearest_existing(folder)
        except OSError:
            found = None
        if found is not None and found.exists() and not found.is_dir():  # mkdir's words: "File exists"
            return f"{found} is a file, not a folder"
        return f"cannot create a file in {folder}: {err.strerror or err}"
    return None


def readable_fix(folder: str | Path) -> str:
    """The fix for a file this user may not read (PermissionError): a bundle copied with a umask of 077
    and run by the service's dynamic user, another user than the one who copied it."""
    return (
        f"make it readable to the user that runs this: chmod -R a+rX {folder} (a service runs as a user of "
        "its own, not the one who copied the files)"
    )


def cache_dir(model_id: str) -> Path:
    """The user cache of this machine for one model: label embeddings and engines computed here."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "semanticac-edge" / model_id


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
