"""False alarms on long real ambience that no development set holds: the ambient recordings of the
game 0 A.D. (Debian's 0ad-data, CC BY-SA 3.0: countryside by day, rivers, waves, rain, wind,
snowstorm, thunder; and a farm, a port and a market) and its recorded sounds of work and animals,
each group joined into one stream, through
the product's own pipeline (benchmarks/trust.py's stream_false_alarms: edge.listen, default
thresholds, 5 s windows, hop 1 s).

    apt-get download 0ad-data    # 1.4 GB; installing it takes 3.2 GB
    dpkg-deb --fsys-tarfile 0ad-data_*.deb | tar -x ./usr/share/games/0ad/mods/public/public.zip
    python benchmarks/ambience.py --zip usr/share/games/0ad/mods/public/public.zip [--bundle B] [--quieter DB]
    # 5-6 min on 2 cores; --zip defaults to the installed package's

Groups (folders of the archive's audio/):
  nature       ambient/{dayscape,water,weather}/: 27 recordings, 24 min, no urban sound in them
  settlements  ambient/building/: 15 recordings of a farm, a port and a market, 5 min: animals, crowds,
               carts, and now and then a dog
  work         resource/**: 193 short recordings (0.3-4 s) of sawing, hammering and chiselling, axes
               on trees, picks on stone and metal, hoes, gathering fruit and grain, 3.8 min
  animals      actor/fauna/**: 63 recordings of horses, elephants, goats, cattle, pigs, sheep,
               chickens, camels and lions, 1.9 min
  talkers      not 0 A.D.'s: people reading aloud, one at a time (the 14 real recordings of Debian's
               pocketsphinx-testdata and 20 held-out espeak-ng clips, trust.py's), 2.4 min
Each through `urban` and through `urban` + the 8 labels added by YAML of benchmarks/trust.py
(NEW_LABELS): events, per hour, by label, and the recording playing at each start (`heard_in`:
`semanticac-edge listen --input FILE --heard 5` shows what the vocabulary hears there).
`semanticac-calibrate thresholds --background FOLDER --join` gives the same starts on the same
files (its "was" column), and the thresholds a site with these sounds would use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

from trust import NEW_LABELS, REAL_SPEECH, real_speech_clips, stream_false_alarms, urban_with

ARCHIVE = Path("/usr/share/games/0ad/mods/public/public.zip")
# each group: folders under the archive's audio/ (with their subfolders)
GROUPS = {"nature": ("ambient/dayscape", "ambient/water", "ambient/weather"), "settlements": ("ambient/building",),
          "work": ("resource",), "animals": ("actor/fauna",)}


def open_archive(archive: Path) -> zipfile.ZipFile:
    """0 A.D.'s public.zip, or SystemExit saying how to get it."""
    if not archive.is_file():
        raise SystemExit(f"{archive} not found: get it with the commands at the top of {__file__}")
    try:
        return zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise SystemExit(f"{archive}: not a zip archive ({err}): pass 0 A.D.'s mods/public/public.zip") from None


def recordings(archive: Path, folder: Path) -> dict[str, list[Path]]:
    """The archive's audio/<each group's folders>/**.ogg (GROUPS), extracted into `folder`, by group, sorted."""
    found: dict[str, list[Path]] = {group: [] for group in GROUPS}
    with open_archive(archive) as z:
        for member in sorted(z.namelist()):
            if not member.endswith(".ogg"):
                continue
            for group, folders in GROUPS.items():
                if any(member.startswith(f"audio/{inside}/") for inside in folders):
                    found[group].append(Path(z.extract(member, folder)))
    for group, paths in found.items():
        if not paths:
            raise SystemExit(f"{archive}: no audio/{{{','.join(GROUPS[group])}}}/**.ogg in it: is it 0 A.D.'s "
                             "mods/public/public.zip?")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, default=ARCHIVE, help=f"0 A.D.'s public.zip (default: {ARCHIVE})")
    parser.add_argument("--bundle", default=None, help="Default: $SEMANTICAC_BUNDLE, else the shipped demo bundle.")
    parser.add_argument("--quieter", type=float, default=0.0, metavar="DB",
                        help="play each stream DB dB down over a microphone's floor (trust.quiet_floor)")
    parser.add_argument("--json", dest="json_out", help="Also write the figures to this file.")
    args = parser.parse_args()
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        groups: dict[str, list[Path]] = recordings(args.zip, tmp / "audio")
        if REAL_SPEECH.is_dir():  # voices, no ambience: people reading aloud (`make setup` installs both)
            from train.data.background import speech_eval_clips

            groups["talkers"] = real_speech_clips(tmp) + speech_eval_clips(tmp / "speech", count=20)
        else:
            print(f"no {REAL_SPEECH} (apt install pocketsphinx-testdata): talkers not measured", file=sys.stderr)
        figures.update(group_false_alarms(args.bundle, groups, tmp, args.quieter))
    report(figures, args.json_out)


def group_false_alarms(bundle: str | None, groups: dict[str, list[Path]], tmp: Path, quieter_db: float = 0.0) -> dict:
    """Each group's recordings joined into one stream, through `urban` and through `urban` + trust.py's
    8 new labels (trust.stream_false_alarms), said as each is measured: {"<group>, <set>": figures}."""
    sets = {"urban": "urban", "urban + 8 new": str(urban_with(tmp / "urban_new.yaml", NEW_LABELS))}
    figures = {}
    for group, paths in groups.items():
        for name, labels in sets.items():
            found = stream_false_alarms(bundle, labels, paths, tmp / "stream.wav", quieter_db)
            found["minutes"] = round(found.pop("hours") * 60, 1)
            figures[f"{group}, {name}"] = found
            print(f"{group} ({len(paths)} recordings, {found['minutes']} min), {name}: {found['events']} "
                  f"event(s), {found['per_hour']:.1f} per hour {found['by_label']}", flush=True)
    return figures


def report(figures: dict, json_out: str | None) -> None:
    print(json.dumps(figures, indent=1))
    if json_out:
        Path(json_out).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
