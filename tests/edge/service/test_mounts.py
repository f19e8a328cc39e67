"""Disks a boot may not have mounted when the service starts: /etc/fstab and mountinfo as this
machine's kernel and an installer write them, read by edge.service.mounts; check-config's warning
and a start's error on a path there."""

from pathlib import Path

import pytest
from click.testing import CliRunner

import edge.cli
import edge.service.mounts as mounts
from edge.errors import ConfigError
from edge.service.config import example_path
from edge.service.mounts import boot_race, fstab_mounts, mounted

FSTAB = r"""# /etc/fstab: static file system information.
UUID=1c2d-root  /               ext4   defaults,errors=remount-ro  0 1
UUID=ab12-usb   /mnt/usb        ext4   defaults,nofail             0 2
/dev/sdb1       /mnt/by\040hand vfat   noauto,user                 0 0
nas:/audio      /srv/nas        nfs    defaults                    0 0
//nas/share     /srv/smb        ext4   _netdev                     0 0
UUID=cd34-auto  /mnt/auto       ext4   nofail,x-systemd.automount  0 2
UUID=ef56-data  /data           ext4   defaults                    0 2
/swapfile       none            swap   sw                          0 0
"""
# /proc/self/mountinfo lines (a desktop's udisks mount of a USB stick, no fstab line)
MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
23 22 0:21 / /dev/shm rw,nosuid,nodev shared:2 - tmpfs tmpfs rw
61 22 8:33 / /media/ann/USB\040STICK rw,nosuid,nodev,relatime shared:40 - vfat /dev/sdc1 rw,uid=1000
62 22 8:17 / /data rw,relatime shared:41 - ext4 /dev/sdb2 rw
"""


def test_fstab_and_mountinfo_are_read_as_the_system_writes_them():
    lines = {m.point: m for m in fstab_mounts(FSTAB)}
    assert sorted(lines) == ["/", "/data", "/mnt/auto", "/mnt/by hand", "/mnt/usb", "/srv/nas", "/srv/smb"]
    assert "nofail" in lines["/mnt/usb"].options and lines["/srv/nas"].type == "nfs"
    now = {m.point: m for m in mounted(MOUNTINFO)}
    assert now["/media/ann/USB STICK"].source == "/dev/sdc1" and now["/dev/shm"].type == "tmpfs"
    real = {m.point for m in mounted(Path("/proc/self/mountinfo").read_text())}  # this machine's own
    assert "/" in real and "/proc" in real


@pytest.mark.parametrize("path, why", [
    ("/mnt/usb/clips", "its /etc/fstab line says nofail: the boot does not wait for it"),
    ("/mnt/by hand/bundle", "its /etc/fstab line says noauto"),
    ("/srv/nas/site.yaml", "a network file system (nfs)"),
    ("/srv/smb/events.sqlite", "its /etc/fstab line says _netdev"),
    ("/media/ann/USB STICK/street.wav", "/dev/sdc1 is mounted there, but not by /etc/fstab"),
    ("/mnt/auto/clips", None),  # an automount: the first access waits for it
    ("/data/clips", None),  # a plain line: local-fs.target, which the service comes after, mounts it
    ("/var/lib/semanticac-edge", None),  # the root
    ("/dev/shm/x", None),  # not a disk
])
def test_a_path_on_a_disk_the_boot_does_not_wait_for_says_how_to_make_it_wait(path, why):
    said = boot_race(path, fstab_mounts(FSTAB), mounted(MOUNTINFO))
    if why is None:
        assert said is None, said
        return
    point = next(p for p in ("/mnt/usb", "/mnt/by hand", "/srv/nas", "/srv/smb", "/media/ann/USB STICK")
                 if path.startswith(p + "/"))
    assert said is not None and why in said and f"[Unit] RequiresMountsFor={point}" in said, said
    assert said.endswith("and a line for it in /etc/fstab") == point.startswith("/media")


@pytest.fixture
def usb(tmp_path, monkeypatch):
    """A folder named in an fstab line with nofail, and not mounted (this machine's own mountinfo)."""
    point = tmp_path / "usb"
    point.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"UUID=ab12-usb {point} ext4 defaults,nofail 0 2\n")
    monkeypatch.setattr(mounts, "FSTAB", fstab)
    return point


def test_check_config_warns_of_a_path_on_a_disk_the_boot_may_not_have_mounted(usb):
    args = ["check-config", str(example_path()), "--set", f"clips.dir={usb / 'clips'}", "--set", "clips.enabled=true"]
    result = CliRunner().invoke(edge.cli.main, args)
    assert result.exit_code == 0, result.output
    assert (f"# warning: clips.dir '{usb / 'clips'}': it is on {usb}, which may not be mounted yet when the service "
            f"starts (its /etc/fstab line says nofail") in result.output, result.output
    assert f"RequiresMountsFor={usb}" in result.output


def test_a_start_that_misses_its_bundle_on_a_disk_not_mounted_says_so(usb, caplog):
    from edge.service.config import load_config
    from edge.service.serve import resolve

    config = load_config(example_path(), [f"model.bundle={usb / 'bundle'}"])
    with pytest.raises(ConfigError) as info:
        resolve(config)
    assert (f"(the disk it is on: {usb} is not mounted now (its /etc/fstab line says nofail: the boot does not wait "
            f"for it); make systemd wait for it: `systemctl edit semanticac-edge`, then [Unit] RequiresMountsFor={usb})"
            ) in str(info.value), str(info.value)


def test_a_start_says_which_folders_it_writes_on_the_disk_beneath_a_disk_not_mounted(usb, tmp_path):
    """A boot that did not wait for the disk: the state folder was made on the disk beneath, its first
    events and clips written there, and hidden when the disk came (said only as "deleted or replaced")."""
    from edge.service.config import load_config
    from edge.service.serve import unmounted_notes

    config = load_config(example_path(), ["clips.enabled=true", f"clips.dir={usb / 'clips'}"])
    notes = unmounted_notes(config, tmp_path / "state")  # the state folder on the root: not said
    assert [note.split(" (")[0] for note in notes] == [f"clips.dir {usb / 'clips'}"], notes
    assert notes[0].endswith("what is written there goes to the disk beneath, hidden once that disk is mounted")
    notes = unmounted_notes(config, usb / "state")
    assert [note.split(" ")[0] for note in notes] == ["service.state_dir", "event_log.path", "clips.dir"], notes


def test_a_disk_read_only_itself_is_told_from_a_read_only_view_of_a_writable_one():
    """The kernel remounts a disk with errors read-only (its super options say ro): a passing trouble.
    A mount read-only alone (ProtectSystem='s view, a bind) over a writable disk is not that."""
    from edge.service.mounts import read_only_disk

    text = MOUNTINFO + (
        "70 22 179:1 / /var/lib/card ro,relatime - ext4 /dev/mmcblk0p1 ro,errors=remount-ro\n"
        "71 22 8:17 /state /var/lib/view ro,nosuid,nodev - ext4 /dev/sdb2 rw\n"
    )
    now = mounted(text)
    assert "/dev/mmcblk0p1 on /var/lib/card) is read-only" in read_only_disk("/var/lib/card/events.sqlite", now)
    assert "mount -o remount,rw /var/lib/card" in read_only_disk("/var/lib/card/not/made/yet", now)
    assert read_only_disk("/var/lib/view/clips", now) is None
    assert read_only_disk("/home/ann", now) is None  # the root, writable
    root_gone = text.replace("/ / rw,relatime shared:1 - ext4 /dev/sda1 rw,", "/ / ro,relatime shared:1 - ext4 /dev/sda1 ro,")
    assert "(/dev/sda1 on /)" in read_only_disk("/home/ann", mounted(root_gone))
    assert read_only_disk("/var/lib/view/clips", mounted(root_gone)) is None  # its own disk is writable


MOUNT_OVER = r"""
import logging, subprocess, sys, time
from pathlib import Path
import edge.service.serve as serve
from edge.outputs.eventlog import EventLogConfig, EventLogSink
from edge.outputs.sinks import Status

logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
folder = Path(sys.argv[1])
serve.LOCK_CHECK_SECONDS = 0.05
with serve.hold_state_dir(folder):
    sink = EventLogSink(EventLogConfig(), folder)
    sink.status(Status(0.0, "info", "before the disk came", code="test"))
    subprocess.run(["mount", "-t", "tmpfs", "usb", str(folder)], check=True)  # the disk, late
    sink.status(Status(1.0, "info", "after", code="test"))
    time.sleep(0.5)
    sink.close()
"""


@pytest.mark.slow  # a process in a mount namespace of its own
def test_a_disk_mounted_over_the_state_folder_while_the_service_runs_is_said_as_such(tmp_path):
    """The boot-race audit: a disk mounted over the state folder after the start hid its first events
    and clips, and the journal said only that the lock and the event log were "deleted or replaced".
    A real tmpfs mounted over the folder, in a mount namespace of the test's own (root only)."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to make a mount namespace")
    folder = tmp_path / "state"
    folder.mkdir()
    run = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", MOUNT_OVER, str(folder)],
                         capture_output=True, text=True, timeout=60)
    if run.returncode != 0 and "unshare" in run.stderr and "Operation not permitted" in run.stderr:
        pytest.skip(f"no mount namespace here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    said = [line for line in lines if "is on another file system than when the service started" in line]
    assert any(line.startswith(f"state folder {folder}: its lock serve.lock was deleted or replaced") for line in said)
    assert any(line.startswith(f"event log {folder / 'events.sqlite'} was deleted or replaced") for line in said)
    assert all("RequiresMountsFor=" in line for line in said), lines
    assert (folder / "events.sqlite").exists()  # seen from outside the namespace: the disk beneath kept it


READ_ONLY = r"""
import logging, sqlite3, subprocess, sys, time
from pathlib import Path
import edge.outputs.eventlog as eventlog
from edge.errors import ConfigError
from edge.outputs.clips import ClipRecorder, ClipsConfig
from edge.outputs.eventlog import EventLogConfig, EventLogSink
from edge.outputs.sinks import Status
from tests.edge.service.test_clips import Feed

logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
disk, scratch = Path(sys.argv[1]), Path(sys.argv[2])
eventlog.REOPEN_SECONDS = 0.0
subprocess.run(["mount", "-t", "tmpfs", "card", str(disk)], check=True)
subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)  # as the kernel does after errors
sink = EventLogSink(EventLogConfig(), disk)
clips = ClipRecorder(ClipsConfig(enabled=True, pre_roll=0.5, post_roll=0.5), disk, 16000)
feed = Feed(clips, scratch)
sink.status(Status(0.0, "info", "while read-only", code="test"))
feed.event("start", 1.0, 1)
feed.event("end", 2.0, 1, duration=1.0)
feed.until(3.0)
time.sleep(0.5)  # the worker tries it
print("SKIPPED", clips.skipped, "WAITING", sink.pending)
from edge.service.config import example_path, load_config
from edge.service.serve import disk_notes
notes = disk_notes(load_config(example_path(), [f"service.state_dir={disk}", "clips.enabled=true"]), environ={})
print("CHECK-CONFIG", sorted(note.split(" ")[0] for _, note in notes if "is read-only" in note))
subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)  # checked and remounted
sink.status(Status(1.0, "info", "writable again", code="test"))
written = feed.event("start", 4.0, 2)
feed.event("end", 5.0, 2, duration=1.0)
feed.until(6.0)
feed.source.stop()
clips.close()
sink.close()
db = sqlite3.connect(disk / "events.sqlite")
print("STATUSES", [m for (m,) in db.execute("SELECT message FROM statuses WHERE code = 'test' ORDER BY id")])
print("CLIPS", [p.name for p in (disk / "clips").glob("*.flac")] == [written])
view = scratch / "view"  # a read-only view of a writable disk (systemd's ProtectSystem=, a bind): the config's
view.mkdir()
subprocess.run(["mount", "--bind", str(view), str(view)], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
for make in (lambda: EventLogSink(EventLogConfig(), view), lambda: ClipRecorder(ClipsConfig(enabled=True), view, 16000)):
    try:
        make()
        print("VIEW started")
    except ConfigError as err:
        print("VIEW refused", err.key, "ReadWritePaths" in str(err))
"""


@pytest.mark.slow  # a process in a mount namespace of its own
def test_a_disk_the_kernel_made_read_only_starts_the_service_and_is_written_once_writable(tmp_path):
    """A card with errors is remounted read-only by the kernel (errors=remount-ro): a service that went
    on running kept its records in memory, but a start (after a crash, a reboot) exited 78 for a bad
    config, and systemd never restarted it. A real tmpfs made read-only and read-write again, in a
    mount namespace of the test's own (root only); a read-only view of a writable disk is still refused."""
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to make a mount namespace")
    disk, scratch = tmp_path / "state", tmp_path / "scratch"
    disk.mkdir()
    scratch.mkdir()
    run = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c", READ_ONLY, str(disk),
                          str(scratch)], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[3])
    if run.returncode != 0 and "unshare" in run.stderr and "Operation not permitted" in run.stderr:
        pytest.skip(f"no mount namespace here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr + run.stdout
    lines = run.stdout.splitlines()
    said = [line for line in lines if "its file system (card on " in line and "is read-only" in line]
    assert any(line.startswith(f"event log {disk / 'events.sqlite'}: cannot be opened now") for line in said), lines
    assert any(line.startswith(f"clips.dir {disk / 'clips'} cannot hold clips now") for line in said), lines
    assert any(line.startswith("clip ") and "skipped" in line for line in said), lines  # the write says why too
    assert "SKIPPED 1 WAITING 1" in lines
    assert "CHECK-CONFIG ['clips.dir', 'event_log.path']" in lines  # check-config warns of it (the start runs on)
    assert "STATUSES ['while read-only', 'writable again']" in lines  # nothing lost meanwhile
    assert "CLIPS True" in lines
    assert lines.count("VIEW refused event_log.path True") == 1 and lines.count("VIEW refused clips.dir True") == 1
