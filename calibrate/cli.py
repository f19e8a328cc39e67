"""`semanticac-calibrate`: fit a deployed bundle's label set to a site (numpy + edge; no torch).

A thin click shell over calibrate.thresholds, calibrate.scores and calibrate.plots: results
(a table) on stdout, logs and progress on stderr, edge's and calibration's errors as one
line (exit 1), bad option values as usage errors (exit 2). Every file is written atomically,
after the whole fit succeeded: a failed run leaves no partial output.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shlex
import signal
import threading
import time
from datetime import date
from functools import partial
from pathlib import Path

import click
import numpy as np

from calibrate.errors import CalibrationError
from edge import __version__
from edge.cli import (
    AGREE_OPTION,
    BACKEND_OPTION,
    HOLD_OPTION,
    HOP_OPTION,
    MIN_DURATION_OPTION,
    MIN_LEVEL_OPTION,
    RELEASE_OPTION,
    SMOOTH_OPTION,
    THREADS_OPTION,
    WINDOW_OPTION,
    PipeGroup,
    domain_errors,
    one_label_set,
    setup_logging,
)
from edge.listen import ListenOptions
from edge.outputs.sinks import padded

log = logging.getLogger(__name__)


@click.group(cls=PipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semanticac-calibrate")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Calibrate a bundle's label set for a site; each command writes a copy of the label set
    (same labels and prompts, so the same embeddings) that `semanticac-edge listen --labels`
    reads.

    \b
    thresholds  per-label thresholds for at most F false alarms per hour of background audio
    scores      a temperature and per-label biases fitted on labelled clips (lower NLL and ECE)
    """
    setup_logging(verbose)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (`timeout`, a closed terminal, a CI job's end) unwinds like Ctrl-C: the joined
        # background's temporary file (gigabytes for a day of audio) is removed, no half output left
        previous = signal.signal(signal.SIGTERM, _terminated)
        click.get_current_context().call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


def _terminated(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


FEW_PER_LABEL = 5  # a label's bias fitted on fewer clips is said to be a guess
# Before calibration the model's top-1 agreeing with fewer of the clips' labels than this (over at least
# MIN_DOUBTED of them) is said: 30 UrbanSound8K clips of ten classes all labelled dog_bark (10 % agreed)
# fitted dog_bark's bias +9.1, then digital silence showed dog_bark 0.999 and a siren scored 0.01.
DOUBTFUL_LABELS = 0.5
MIN_DOUBTED = 10


def trained_on(bundle, paths: list[Path]) -> tuple[int, str] | None:
    """(how many of `paths` the bundle trained on, where: its roots that hold them), or None:
    model.json's training.data, a dataset folder (every clip under it) or a training CSV (the files
    it lists, less the rows of its test folds). Only roots the training machine named absolutely (as
    `fit` records them since 2026-12-07), and only what they trained on in full (a validation share, or
    a dataset folder's test folds, held some out, which a path alone cannot tell)."""
    wanted = {Path(path).resolve() for path in paths}
    seen: set[Path] = set()
    roots: list[str] = []
    for entry in bundle.meta.training.get("data") or []:
        if not isinstance(entry, dict) or entry.get("val_fraction"):
            continue
        root, held = Path(str(entry.get("root", ""))), {str(fold) for fold in entry.get("test_folds") or []}
        if not root.is_absolute():
            continue
        if root.is_dir() and str(root.resolve()) != root.resolve().anchor and not held:
            inside = {path for path in wanted if path.is_relative_to(root.resolve())}
        elif root.is_file() and root.suffix.lower() == ".csv":
            inside = wanted & _csv_files(root, held)
        else:
            continue
        if inside:
            seen |= inside
            roots.append(str(root))
    return (len(seen), " and ".join(roots)) if seen else None


def _fold(text: str) -> str:
    """A CSV's fold as training reads it (`01` is fold 1)."""
    try:
        return str(int(text.strip()))
    except ValueError:
        return text.strip()


def _csv_files(csv_path: Path, held: frozenset[str] | set[str] = frozenset()) -> set[Path]:
    """The files a training CSV lists (its `file` column, relative to its folder), less the rows of the
    folds in `held` (its test folds); none if unreadable."""
    import csv

    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            return {
                (csv_path.parent / row["file"].strip()).resolve()
                for row in csv.DictReader(f)
                if row.get("file") and _fold(row.get("fold") or "") not in held
            }
    except (OSError, UnicodeDecodeError, csv.Error, KeyError):
        return set()


def command_line(ctx: click.Context) -> str:
    """The command as given (options that differ from their default), for the file's header."""
    words = ["semanticac-calibrate", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        # identity, not ==: 0 == False, and `--min-level 0` is a value
        if not isinstance(param, click.Option) or value is None or value == () or value is param.default:
            continue
        if param.is_flag and param.secondary_opts:  # --bias/--no-bias: the side given
            words.append(max(param.opts if value else param.secondary_opts, key=len))
            continue
        if value is False or value == param.default:
            continue
        flag = max(param.opts, key=len)
        # a `multiple` option whose callback made it one value (--labels: one_label_set) is that value
        for item in value if param.multiple and isinstance(value, (list, tuple)) else [value]:
            words += [flag] if param.is_flag else [flag, str(item)]
    return " ".join(shlex.quote(w) for w in words)


def _budget(ctx, param, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(
            f"{value!r} is not allowed: use a finite number > 0 (e.g. 1: at most one "
            "false event per hour of background)"
        )
    return value


def _score(ctx, param, value):
    if value is not None and not (math.isfinite(value) and 0 < value <= 1):
        raise click.BadParameter(f"{value!r} is not allowed: use a score in (0, 1]")
    return value


def _penalty(ctx, param, value):
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(f"{value!r} is not allowed: use a finite number >= 0 (0: no penalty)")
    return value


LABELS = click.option(
    "--labels",
    "labels_spec",
    required=True,
    multiple=True,
    callback=one_label_set,
    metavar="NAME|PATH",
    help="The label set to calibrate: a YAML file, or a shipped set (urban, esc50).",
)
BUNDLE = click.option(
    "--bundle",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="Bundle folder. Default: $SEMANTICAC_BUNDLE, else the shipped demo bundle.",
)


def writable_output(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An output file whose folder can be written (made if missing), checked before any listening."""
    from pathlib import Path

    from edge.fsutil import unwritable_reason

    problem = None if value is None else unwritable_reason(Path(value).parent)
    if problem is not None:
        raise click.BadParameter(f"{value!r} cannot be written ({problem}): choose a folder you can write to")
    if value is not None and param.name == "out":  # what it held as this run began (write_outputs compares)
        ctx.meta[OUT_AT_START] = _text_or_none(Path(value))
    return value


OUT_AT_START = "calibrate.out_at_start"


def _text_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def raised_within_budget(fit, budget: float) -> list[str]:
    """Why a label's threshold rose although its old one kept within the budget: a threshold between
    them starts more (hysteresis: a higher threshold ends an event sooner, and the sound starts it again),
    and the fit takes one that every higher threshold keeps within budget."""
    if not (fit.met and fit.threshold > fit.old_threshold and fit.old_starts <= budget):
        return []
    over = [(t, n) for t, n in fit.curve if fit.old_threshold < t < fit.threshold and n > budget]
    if not over:
        return []
    return [
        f"{fit.label}: raised though {fit.old_threshold:g} started {fit.old_starts}, within the budget: from "
        f"{over[0][0]:.3g} to {over[-1][0]:.3g} the background starts up to {max(n for _, n in over)} (a higher "
        "threshold ends an event sooner and the sound starts it again), and the fit takes a threshold that "
        "every higher one keeps within the budget"
    ]


def figure_output(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--plot: a writable file named for a format the figure can be written in (its ending), checked
    before any listening: a .pdf or .svg name got PNG bytes, and a viewer or a report then failed on it."""
    from calibrate.plots import FIGURE_FORMATS

    value = writable_output(ctx, param, value)
    if value is not None and Path(value).suffix.lower() not in FIGURE_FORMATS:
        ending = Path(value).suffix or "no ending"
        raise click.BadParameter(
            f"{value!r} ends in {ending}: the figure is written as {', '.join(FIGURE_FORMATS)} by its name's "
            f"ending; name it e.g. {Path(value).stem or 'figure'}.png"
        )
    return value


def stale_calibration(label_set, model_id: str) -> None:
    """CalibrationError, before any listening, for a set whose calibration (temperature, biases) was
    fitted on another model than the bundle's: thresholds fitted on scores it distorts would be
    written as this model's (fitted_model), hiding that the calibration needs `scores` again."""
    calibrated = label_set.temperature != 1.0 or any(label.bias != 0.0 for label in label_set.labels)
    if calibrated and label_set.fitted_model is not None and label_set.fitted_model != model_id:
        raise CalibrationError(
            f"label set {label_set.name!r} ({label_set.source}) has a calibration fitted on model "
            f"{label_set.fitted_model}, and this bundle is {model_id}: fit the calibration on this bundle first "
            "(`semanticac-calibrate scores`), then these thresholds on its scores"
        )


def distinct_outputs(out: str, plot: str | None, inputs: dict[str, list[Path]]) -> None:
    """UsageError, before any listening, where --plot is --out or an output is one of the inputs
    (`inputs`: option -> its files): the figure would be drawn over the label set, or the label set
    written over the clips' list. --out may be the --labels file itself: a set fitted again in place,
    its previous version kept beside it."""
    if plot and Path(plot).resolve() == Path(out).resolve():
        raise click.UsageError(
            f"--plot {plot} is the --out file: the figure would replace the label set; give the "
            "PNG its own name (e.g. --plot false_alarms.png)"
        )
    given = {Path(f).resolve(): source for source, files in inputs.items() for f in files}  # each resolved once
    for option, path in (("--out", out), ("--plot", plot)):
        source = given.get(Path(path).resolve()) if path else None
        if source is not None:
            raise click.UsageError(
                f"{option} {path} is also given as {source}: writing it would destroy that "
                f"input; write the {'figure' if option == '--plot' else 'label set'} "
                "somewhere else"
            )


OUT = click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    callback=writable_output,
    help="The site's label set (YAML) to write.",
)


def write_outputs(out: str, write_yaml, plot: str | None, draw) -> None:
    """The site's label set (`write_yaml()`) and its figure (`draw(path)`), all or nothing: the
    figure is drawn into a temporary file beside `plot` first, takes its name only once the YAML
    is written, and is removed if that fails. A file that cannot be written is one line."""
    from calibrate.labelfile import backup_path
    from edge.fsutil import atomic_path

    writing = plot or out
    started = time.time()
    ctx = click.get_current_context(silent=True)
    # another calibrate (scores and thresholds run at once on one set) or an edit wrote --out meanwhile: a
    # stamped file of calibrate's was replaced as it was, and the first run's fit was lost without a word
    changed = ctx is not None and OUT_AT_START in ctx.meta and _text_or_none(Path(out)) != ctx.meta[OUT_AT_START]
    if changed:
        log.warning(
            "%s changed while this ran (another calibrate, or an edit): that version is kept as %s, and this "
            "run's result, made from the set as it was when this run began, replaces it: merge the two if both "
            "matter",
            out,
            backup_path(Path(out)),
        )
    try:
        with contextlib.ExitStack() as stack:
            if plot:
                draw(stack.enter_context(atomic_path(plot, suffix=Path(plot).suffix)))  # its format, by the name
            writing = out
            write_yaml(keep_previous_always=changed)
            writing = plot or out
    except OSError as err:
        raise click.ClickException(
            f"cannot write {writing}: {err.strerror or err}; nothing was written: choose a folder you can write to"
        ) from None
    for path in (plot, out):
        if path:
            click.echo(f"wrote {path}")
    backup = backup_path(Path(out))
    if backup.is_file() and backup.stat().st_mtime >= started - 1.0:
        click.echo(
            f"kept the previous {out} as {backup} (its comments are not in the new one; the values it held are, "
            "where not fitted anew)"
        )


@main.command()
@LABELS
@BUNDLE
@click.option(
    "--background",
    multiple=True,
    required=True,
    type=click.Path(exists=True),
    help="Recordings of the site without the sounds to detect: audio files or folders of them "
    "(searched recursively). Repeat for several.",
)
@click.option(
    "--positives",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CSV (path,label; paths relative to the CSV's folder) of clips of the sounds: reports the "
    "recall the new thresholds cost.",
)
@click.option(
    "--false-alarms-per-hour",
    "per_hour",
    type=float,
    required=True,
    callback=_budget,
    metavar="F",
    help="Budget: at most F events started per hour of background, per label (with --total: all labels together).",
)
@OUT
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    callback=figure_output,
    help="Figure of false alarms per hour against threshold, per label: .png, .pdf or .svg (needs matplotlib).",
)
@click.option(
    "--join",
    is_flag=True,
    help="Join the background files end to end into one stream (default: each file its own stream).",
)
@click.option(
    "--min-threshold",
    type=float,
    default=None,
    callback=_score,
    help="Lowest threshold written (with --lower). Default: 1/K, the chance level of a softmax over the K labels.",
)
@click.option(
    "--total",
    is_flag=True,
    help="F is the whole set's budget: false alarms are cut where that costs the smallest rise in threshold "
    "(a site wants at most F alarms an hour, whichever label raises them).",
)
@click.option(
    "--only-raise/--lower",
    "only_raise",
    default=None,
    help="Never lower a threshold below the label set's own, or let a label the background never triggers "
    "fall to --min-threshold. Default: --only-raise for a bundle with a score per label (sigmoid: a "
    "threshold is a probability, and a background only says what it holds), --lower for a softmax one.",
)
@WINDOW_OPTION
@HOP_OPTION
@SMOOTH_OPTION
@MIN_DURATION_OPTION
@RELEASE_OPTION
@HOLD_OPTION
@MIN_LEVEL_OPTION
@AGREE_OPTION
@THREADS_OPTION
@BACKEND_OPTION
@click.pass_context
@domain_errors
def thresholds(
    ctx,
    labels_spec,
    bundle,
    background,
    positives,
    per_hour,
    out,
    plot,
    join,
    min_threshold,
    total,
    only_raise,
    window,
    hop,
    smooth,
    min_duration,
    release_ratio,
    hold,
    min_level,
    agree,
    threads,
    backend_choice,
):
    """Per-label thresholds for at most F false alarms per hour of background.

    Listens to the background exactly as `semanticac-edge listen --input FILE --fast` would
    (same window, hop, smoothing, minimum duration, release, hold and level gate: use the same
    values on the device; a service holds events 30 s unless its config says otherwise: --hold 30),
    then gives each label the lowest threshold (not below the set's own with --only-raise, the
    default for a sigmoid bundle; else not below --min-threshold) at which edge's event detector
    starts at most F events per hour ("was": the starts at the set's own threshold). Writes the
    label set with those thresholds.
    """
    from calibrate.inputs import audio_files, read_clip_csv, resolve_labels
    from calibrate.labelfile import write_label_set
    from calibrate.thresholds import fit_thresholds

    if plot:
        from calibrate.plots import require_matplotlib

        require_matplotlib()  # before the long run, not after it
    from edge.bundle import resolve_bundle
    from edge.labels.labelset import resolve_label_set

    files = audio_files(background)
    distinct_outputs(out, plot, {"--background": files, **({"--positives": [Path(positives)]} if positives else {})})
    bundle_ = resolve_bundle(bundle)
    label_set = resolve_label_set(labels_spec)  # read once here: each read says its notes again
    stale_calibration(label_set, bundle_.meta.model_id)
    if only_raise is None:
        only_raise = bundle_.meta.scoring.get("kind", "softmax") == "sigmoid"
        ctx.params["only_raise"] = only_raise  # the file's header says which was used
    options = ListenOptions(
        labels=labels_spec,
        bundle=bundle,
        input=str(files[0]),
        fast=True,
        window=window,
        hop=hop,
        smooth=smooth,
        min_duration=min_duration,
        release=release_ratio,
        hold=hold,
        threads=threads,
        backend=backend_choice,
        min_level=min_level,
        agree=agree,
    )
    pairs = []
    if positives:
        everything = resolve_labels(
            read_clip_csv(positives),
            label_set,
            f"--positives {positives}",
            fix="correct the label, or leave the row out",
        )
        clips = [clip for clip in everything if clip.label is not None]
        if len(clips) < len(everything):  # a CSV shared with `scores`: its negatives are no positives
            log.warning(
                "--positives %s: %d clip(s) labelled none left out: positives are the sounds to detect (other "
                "sounds belong in --background)",
                positives,
                len(everything) - len(clips),
            )
        if not clips:
            raise CalibrationError(f"--positives {positives}: no clip of the set's labels: list the sounds to detect")
        missing = [clip for clip in clips if not clip.path.is_file()]
        if len(missing) == len(clips):
            raise CalibrationError(
                f"--positives {positives}: none of its {len(clips)} file(s) is found (first: {missing[0].path}, "
                f"{missing[0].where}): paths are relative to the CSV's folder {Path(positives).parent}"
            )
        if missing:  # said now, not after the background's listen
            log.warning(
                "--positives %s: %d of %d file(s) not found, skipped (first: %s, %s): paths are relative to the "
                "CSV's folder",
                positives,
                len(missing),
                len(clips),
                missing[0].path,
                missing[0].where,
            )
        pairs = [(clip.path, clip.label) for clip in clips if clip.label is not None]
    report = fit_thresholds(
        options,
        files,
        per_hour,
        join=join,
        positives=pairs,
        min_threshold=min_threshold,
        only_raise=only_raise,
        total=total,
    )
    scope = "for the whole set" if total else "per label"

    click.echo(
        f"background: {report.hours * 3600:.1f} s ({report.hours:.3f} h) in {report.streams} stream(s), "
        f"{report.files} file(s)"
        + (f", {len(report.skipped)} skipped as unreadable" if report.skipped else "")
        + f"; budget {per_hour:g} false alarm(s) per hour {scope}"
    )
    if report.short_streams:
        click.echo(
            f"{report.short_streams} background stream(s) too short for an event to last --min-duration: "
            "they count as hours without false alarms; use --join for short files"
        )
    recall = positives is not None
    head = f"{'label':<24} {'old':>7} {'new':>7} {'starts':>7} {'was':>5} {'per hour':>9}"
    click.echo(head + (f" {'positives':>9} {'recall old':>10} {'recall new':>10}" if recall else ""))
    for fit in report.fits:
        line = (
            f"{padded(fit.label, 24)} {fit.old_threshold:>7.4g} {fit.threshold:>7.4g} {fit.starts:>7d} "
            f"{fit.old_starts:>5d} {fit.per_hour:>9.3g}" + ("" if fit.met else "  OVER BUDGET at every threshold")
        )
        if recall:
            line += f" {fit.positives:>9d}" + (
                f" {fit.recall_old:>10.1%} {fit.recall_new:>10.1%}" if fit.positives else f" {'-':>10} {'-':>10}"
            )
        click.echo(line)
    if report.positives_skipped:
        click.echo(f"{len(report.positives_skipped)} positive file(s) skipped as unreadable")
    if not total:
        for fit in report.fits:
            for line in raised_within_budget(fit, report.per_hour_budget * report.hours):
                click.echo(line)
    lowered = [fit.label for fit in report.fits if fit.threshold < fit.old_threshold]
    if lowered:
        click.echo(
            f"{len(lowered)} threshold(s) lowered: the budget allows it on this background; "
            "sounds it did not hold may now start events (--only-raise keeps the old ones)"
        )
    deaf = [fit for fit in report.fits if fit.positives and not fit.recall_new and fit.recall_old]
    if deaf:  # one cell of the table had said it: these labels will never start an event on their sound
        log.warning(
            "%d label(s) start no event on any of their positives at the new threshold (their recall falls to 0): "
            "%s; a budget this low costs them every event: raise --false-alarms-per-hour, give background "
            "without their sound, or leave them out of the set",
            len(deaf),
            ", ".join(f"{fit.label} ({fit.old_threshold:.4g} -> {fit.threshold:.4g})" for fit in deaf),
        )
    unmet = [fit.label for fit in report.fits if not fit.met]
    if total:
        starts = sum(fit.starts for fit in report.fits)
        click.echo(f"the set: {starts} start(s), {starts / report.hours:.3g} per hour")
        if not report.total_met:
            log.warning("the set starts more than %g events per hour even at the highest useful thresholds", per_hour)
    elif unmet:
        log.warning(
            "%d label(s) start more than %g events per hour at every threshold tried: %s",
            len(unmet),
            per_hour,
            ", ".join(unmet),
        )

    how = "joined into one stream" if join else "each file its own stream"
    clip = bundle_.meta.clip_seconds
    window_text = f"{window:g} s" if window is not None else f"{clip:g} s (the bundle's clip length)"
    heard = options.windowing(bundle_)  # in the bundle's frames, as listen compares them
    fitted_for = {  # written into the set: listen warns when it runs with other settings
        "window": heard.window_seconds,
        "hop": heard.hop_seconds,
        "smooth": smooth,
        "min_duration": min_duration,
        "release": release_ratio,
        "hold": hold,
        **({"min_level": min_level} if min_level is not None else {}),
    }
    gate = f", min_level {min_level:g} dBFS" if min_level is not None else ""
    gate += f", agree {agree:g} (written as the set's agree:)" if agree is not None else ""
    header = [
        f"Label set {report.label_set.name!r} with per-label thresholds fitted by semanticac-calibrate {__version__} "
        f"on {date.today().isoformat()}:",
        f"at most {per_hour:g} false alarm(s) per hour {scope} on {report.hours:.3f} h of background "
        f"({report.files} file(s), {how}"
        + (f", {len(report.skipped)} unreadable skipped" if report.skipped else "")
        + ").",
        f"Valid for listen with: window {window_text}, hop {hop:g} s, "
        f"smooth {smooth}, min_duration {min_duration:g} s, release {release_ratio:g}, hold {hold:g} s{gate}.",
        f"From {report.label_set.source} (labels_sha256 {report.label_set.sha256[:16]}...).",
        f"Command: {command_line(ctx)}",
    ] + ([f"Over budget at every threshold: {', '.join(unmet)}"] if unmet else [])
    if total and not report.total_met:
        starts = sum(fit.starts for fit in report.fits)
        header.append(f"Over budget: the set starts {starts / report.hours:.3g} per hour even at these thresholds.")
    from calibrate.plots import plot_false_alarms

    write_outputs(
        out,
        partial(
            write_label_set,
            out,
            report.label_set,
            thresholds=report.thresholds,
            agree=agree,
            fitted_for=fitted_for,
            fitted_model=bundle_.meta.model_id,
            header=header,
        ),
        plot,
        partial(plot_false_alarms, report),
    )


@main.command()
@LABELS
@BUNDLE
@click.option(
    "--data",
    multiple=True,
    required=True,
    metavar="CSV|esc50:ROOT|us8k:ROOT[:FOLDS]",
    help="Labelled clips: a CSV (path,label; paths relative to its folder; label 'none': a clip of none of "
    "the set's labels), or a dataset's meta.csv: esc50:ROOT, us8k:ROOT or us8k:ROOT:1,2 (those folds). "
    "Repeat for several.",
)
@click.option(
    "--others-are-none",
    is_flag=True,
    help="Clips of a label the set does not have are clips of none of its labels (negatives: a dataset's "
    "other categories as the site's other sounds), not an error.",
)
@OUT
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    callback=figure_output,
    help="Figure of reliability diagrams before and after: .png, .pdf or .svg (needs matplotlib).",
)
@click.option(
    "--bias/--no-bias",
    "fit_bias",
    default=True,
    show_default=True,
    help="Fit a bias per label (labels with clips) as well as the temperature.",
)
@click.option(
    "--bias-l2",
    type=float,
    default=None,
    callback=_penalty,
    help="L2 penalty on the biases (on the mean NLL). Default: of 0.001, 0.01, 0.1 and 1, the one whose NLL on "
    "clips held out is lowest (5 folds, a recording's clips together; 0.01 with fewer than 5 recordings).",
)
@THREADS_OPTION
@BACKEND_OPTION
@click.pass_context
@domain_errors
def scores(ctx, labels_spec, bundle, data, out, plot, others_are_none, fit_bias, bias_l2, threads, backend_choice):
    """A temperature and per-label biases fitted on labelled clips.

    Fits T (one per label set) and a bias per label on the model's logits (logit_scale x
    cosine) by minimising the negative log-likelihood of the clips' labels, reports NLL, ECE
    (15 bins of top-1 confidence) and top-1 accuracy before and after (those two on the clips of
    the set's labels; clips of none of them, for a per-label sigmoid bundle, teach the biases how
    unsure to be of other sounds), and writes the label
    set with `calibration: {temperature: T}` and each label's `bias`. Fit thresholds after
    this (`semanticac-calibrate thresholds --labels OUT`): calibration changes the scores.
    """
    from calibrate.inputs import read_dataset, resolve_labels
    from calibrate.labelfile import write_label_set
    from calibrate.scores import embed_clips, fit_scores
    from edge.backends import select_backend
    from edge.bundle import resolve_bundle
    from edge.labels.embeddings import label_embeddings_for
    from edge.labels.labelset import resolve_label_set
    from edge.vocabulary import Vocabulary

    if plot:
        from calibrate.plots import require_matplotlib

        require_matplotlib()
    if threads is not None:  # validated as listen validates it
        ListenOptions(labels=labels_spec, threads=threads)
    label_set = resolve_label_set(labels_spec)
    clips = resolve_labels([clip for spec in data for clip in read_dataset(spec)], label_set, "--data", others_are_none)
    distinct_outputs(
        out, plot, {"--data": [Path(spec) for spec in data if Path(spec).is_file()] + [clip.path for clip in clips]}
    )
    bundle_ = resolve_bundle(bundle)
    seen = trained_on(bundle_, [clip.path for clip in clips])
    if seen is not None:
        click.echo(
            f"warning: {seen[0]} of the {len(clips)} clips are of {seen[1]}, which the bundle trained on in full "
            "(model.json training.data): its figures on them, 'held out' too, are a training set's, not what the "
            "site will see; give clips it never heard",
            err=True,
        )
    embeddings = label_embeddings_for(bundle_, label_set, threads)
    vocabulary = Vocabulary.from_bundle(bundle_)
    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(select_backend(bundle_, backend_choice, threads=threads))
        branch = None
        # listen runs the vocabulary graph only where it changes a score (a new label, a head): so do these
        if vocabulary is not None and not vocabulary.fusion(embeddings.embeddings, label_set.reads).identity:
            graph = stack.enter_context(select_backend(bundle_, graph="vocabulary", threads=threads))
            branch = partial(vocabulary.scores, graph)
        clipset = embed_clips(bundle_, label_set, clips, backend, branch)
    report = fit_scores(
        bundle_,
        label_set,
        embeddings,
        clipset,
        fit_bias=fit_bias,
        bias_l2=bias_l2,
    )

    cal = report.calibration
    click.echo(
        f"{report.clips} clip(s)"
        + (f" ({report.negatives} of none of the set's labels)" if report.negatives else "")
        + (f", {len(report.skipped)} skipped as unreadable" if report.skipped else "")
        + f"; scoring {report.kind}; temperature {cal.temperature:.4g} ({cal.steps} L-BFGS steps)"
    )
    if fit_bias and len(report.cv_nll) > 1:
        tried = ", ".join(f"{l2:g}: {value:.4f}" for l2, value in report.cv_nll.items())
        click.echo(f"bias L2 penalty {report.bias_l2:g}, the lowest held-out NLL of {tried}")
    rows = [("before", report.before), ("after", report.after)]
    if report.held_out is not None:
        rows.append(("held out", report.held_out))
    click.echo(f"{'':<10} {'NLL':>8} {'ECE':>8} {'top-1':>8}")
    for name, m in rows:
        click.echo(f"{name:<10} {m.nll:>8.4f} {m.ece:>8.4f} {m.accuracy:>8.1%}")
    if report.held_out is not None:
        click.echo(
            f"('after' is on the clips it was fitted on; 'held out' scores each clip with a calibration fitted "
            f"without its recording, {report.folds} folds: what to expect on the site's other sounds)"
        )
        if not any(clip.recording for clip in clips):
            click.echo(
                "(no clip says which recording it was cut from, so each was held out alone: if clips were cut from "
                "longer recordings, 'held out' is optimistic; give the CSV a `recording` (or `group`) column)"
            )
        if report.held_out.nll > report.before.nll:
            click.echo(
                f"warning: held out, this calibration scores worse than none (NLL {report.held_out.nll:.4f} > "
                f"{report.before.nll:.4f} before): on the site's other sounds it would do harm; use more clips and "
                "recordings, or --no-bias",
                err=True,
            )
    else:
        click.echo(
            "(too few recordings to hold any out: 'after' is on the clips it was fitted on, and other sounds "
            "will do worse; give a CSV a `recording` column, or more recordings)"
        )
    if report.before.accuracy < DOUBTFUL_LABELS and report.clips - report.negatives >= MIN_DOUBTED:
        loudest = int(np.argmax(np.abs(cal.biases))) if len(cal.biases) else None
        click.echo(
            f"warning: before calibration the model's top-1 agrees with {report.before.accuracy:.0%} of the clips' "
            "labels: a label column that is wrong or shifted (every clip given one label, rows out of step) fits a "
            "calibration that overrules the model"
            + (
                f" ({label_set.names[loudest]}'s bias {cal.biases[loudest]:+.2f})"
                if loudest is not None and abs(cal.biases[loudest]) >= 3.0
                else ""
            )
            + "; check the labels against a few of the clips before using the set",
            err=True,
        )
    click.echo(f"{'label':<24} {'clips':>6} {'bias':>8}")
    for label, n, b in zip(label_set.names, report.per_label, cal.biases):
        few = (
            "  (no clip: bias 0)" if not n else f"  (under {FEW_PER_LABEL} clips: a guess)" if n < FEW_PER_LABEL else ""
        )
        click.echo(f"{padded(label, 24)} {int(n):>6d} {b:>+8.3f}{few}")
    header = [
        f"Label set {label_set.name!r} with a score calibration fitted by semanticac-calibrate {__version__} "
        f"on {date.today().isoformat()}:",
        f"temperature {cal.temperature:.6g}"
        + (", a bias per label with clips" if fit_bias else "")
        + f", on {report.clips} labelled clip(s) ({report.kind}).",
        f"NLL {report.before.nll:.4f} -> {report.after.nll:.4f}, ECE {report.before.ece:.4f} -> "
        f"{report.after.ece:.4f}, top-1 {report.before.accuracy:.1%} -> {report.after.accuracy:.1%}"
        + (
            f"; held out by recording: NLL {report.held_out.nll:.4f}, ECE {report.held_out.ece:.4f}, top-1 "
            f"{report.held_out.accuracy:.1%} (bias L2 {report.bias_l2:g})."
            if report.held_out is not None
            else "."
        ),
        "Thresholds are the original set's: fit them again on these scores with `semanticac-calibrate thresholds`.",
        f"From {label_set.source} (labels_sha256 {label_set.sha256[:16]}...).",
        f"Command: {command_line(ctx)}",
    ]
    from calibrate.plots import plot_reliability

    write_outputs(
        out,
        # fitted_for goes: the set's thresholds were fitted on the scores before this calibration
        partial(
            write_label_set, out, report.label_set, fitted_for={}, fitted_model=bundle_.meta.model_id, header=header
        ),
        plot,
        partial(plot_reliability, report),
    )


if __name__ == "__main__":
    main()
