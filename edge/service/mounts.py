"""Disks that a boot may not have mounted yet when the service starts.

A service is ordered after local-fs.target, so the disks /etc/fstab mounts at boot are there when
it starts, but not all of them: a line with `nofail` (usual for a USB or NVMe disk, so that a
missing one does not stop the boot) is not waited for, `noauto` is mounted by hand, a network file
system comes after remote-fs.target, which a service is not ordered after, and a disk a desktop
mounted (udisks under /media) has no line at all. A bundle, label set or event log there is
missing at the start, which exits 78 (systemd does not restart it), and a state folder there is
made on the disk beneath, hidden once the disk comes. `RequiresMountsFor=` in a drop-in makes
systemd wait for the disk; `check-config` says so for each path that needs it (`boot_race`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge.service.sections import NAME

FSTAB = Path("/etc/fstab")
MOUNTINFO = Path("/proc/self/mountinfo")
# file systems reached over a network: mounted after the network, under remote-fs.target
NETWORK_TYPES = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "davfs", "fuse.sshfs", "sshfs"}
)
_ESCAPE = re.compile(r"\\([0-7]{3})")  # fstab and mountinfo write a space in a path as \040


@dataclass(frozen=True)
class Mount:
    point: str
    type: str
    source: str
    options: frozenset[str]
    super_options: frozenset[str] = frozenset()  # the file system's own (mountinfo), beyond this mount's


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def fstab_mounts(text: str) -> list[Mount]:
    """The file systems of an /etc/fstab's text (comments, swap and malformed lines left out)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 3 or not fields[1].startswith("/"):  # swap's mount point is "none"
            continue
        options = frozenset(fields[3].split(",")) if len(fields) > 3 else frozenset()
        mounts.append(Mount(_unescape(fields[1]).rstrip("/") or "/", fields[2], _unescape(fields[0]), options))
    return mounts


def mounted(text: str) -> list[Mount]:
    """The file systems mounted now, from /proc/self/mountinfo's text."""
    mounts = []
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        supers = frozenset(tail[2].split(",")) if len(tail) > 2 else frozenset()
        mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]), frozenset(fields[5].split(",")), supers))
    return mounts


def _holding(path: Path, mounts: Sequence[Mount], root: bool = False) -> Mount | None:
    """The mount of `mounts` whose point is the nearest above `path` (the last mounted there), "/" left
    out unless `root`."""
    above = [m for m in mounts if (root or m.point != "/") and path.is_relative_to(m.point)]
    return max(reversed(above), key=lambda m: len(m.point), default=None)


def _race(path: Path, fstab: Sequence[Mount], now: Sequence[Mount]) -> tuple[str, str, bool] | None:
    """(mount point, why a boot may start the service before it is mounted, whether /etc/fstab names it)
    for absolute `path`; None when it is on a disk the boot waits for (or on the root)."""
    line = _holding(path, fstab)
    if line is None:
        disk = _holding(path, now)
        if disk is None or not disk.source.startswith("/dev/"):  # the root, or a tmpfs, proc, overlay, ...
            return None
        return disk.point, f"{disk.source} is mounted there, but not by /etc/fstab (a desktop's automount?)", False
    if line.type in NETWORK_TYPES:
        why = f"a network file system ({line.type}): a service does not wait for those"
    elif "_netdev" in line.options:
        why = "its /etc/fstab line says _netdev: mounted once the network is up, which a service does not wait for"
    elif "x-systemd.automount" in line.options:  # the first access waits for the mount
        return None
    elif "noauto" in line.options:
        why = "its /etc/fstab line says noauto: it is mounted by hand, not at boot"
    elif "nofail" in line.options:
        why = "its /etc/fstab line says nofail: the boot does not wait for it"
    else:
        return None
    return line.point, why, True


def _fix(point: str, in_fstab: bool) -> str:
    return f"make systemd wait for it: `systemctl edit {NAME}`, then [Unit] RequiresMountsFor={point}" + (
        "" if in_fstab else " and a line for it in /etc/fstab"
    )


def boot_race(path: str | Path, fstab: Sequence[Mount], now: Sequence[Mount]) -> str | None:
    """Why a boot may start the service before the disk that holds absolute `path` is mounted, in
    words ending in the fix; None when it is on a disk the boot waits for (or on the root)."""
    race = _race(Path(path), fstab, now)
    if race is None:
        return None
    point, why, in_fstab = race
    return f"it is on {point}, which may not be mounted yet when the service starts ({why}); {_fix(point, in_fstab)}"


def read_mounts() -> tuple[list[Mount], list[Mount]]:
    """(this machine's /etc/fstab, what is mounted now); an unreadable file gives no mounts."""
    texts = []
    for path in (FSTAB, MOUNTINFO):
        try:
            texts.append(path.read_text(errors="replace"))
        except OSError:
            texts.append("")
    return fstab_mounts(texts[0]), mounted(texts[1])


def absent_disk(path: str | Path, fstab: Sequence[Mount], now: Sequence[Mount]) -> str | None:
    """For absolute `path` on a disk /etc/fstab names that is not mounted now: that, and the fix
    (RequiresMountsFor= where the boot does not wait for it, else where to read why it failed); else None."""
    line = _holding(Path(path), fstab)
    if line is None or any(m.point == line.point for m in now):
        return None
    race = _race(Path(path), fstab, now)
    if race is None:
        return f"{line.point} is not mounted now, though the boot mounts it: `systemctl status {line.point}` says why"
    return f"{line.point} is not mounted now ({race[1]}); {_fix(line.point, True)}"


def read_only_disk(path: str | Path, now: Sequence[Mount] | None = None) -> str | None:
    """For a `path` whose file system is itself read-only, that and what to do, in words; else None.
    The kernel remounts a disk read-only after errors (ext4's errors=remount-ro, usual for a root on an
    SD card or eMMC): a passing trouble for the service, which listens on and writes once it can. A
    mount that is read-only alone (systemd's ProtectSystem= view of a folder outside ReadWritePaths=, a
    read-only bind) is a configuration matter, not this. `now`: read_mounts()'s, read here when not given."""
    mounts = read_mounts()[1] if now is None else now
    disk = _holding(Path(os.path.realpath(path)), mounts, root=True)
    if disk is None or "ro" not in disk.super_options:
        return None
    return (
        f"its file system ({disk.source} on {disk.point}) is read-only: the kernel does that to a disk with "
        "errors (see `dmesg`); check it (fsck, or a failing card or disk), or remount it read-write "
        f"(mount -o remount,rw {disk.point})"
    )


def mounted_over(folder: str | Path, device: int) -> str:
    """ "" while `folder` is still on the file system `device` (st_dev) it was on, else why a file the
    service keeps there seems gone, and the fix: a disk mounted over it after the start, or gone from
    under it, hides what was written before (a boot that did not wait for the disk)."""
    try:
        now = os.stat(folder).st_dev
    except OSError:
        return ""
    if now == device:
        return ""
    return (
        f" ({folder} is on another file system than when the service started: a disk mounted over it, or one "
        "unmounted from under it; what was written there before lies on the disk beneath. A disk the boot did "
        f"not wait for: {_fix('<its mount point>', True)})"
    )
