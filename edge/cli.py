"""`semanticac-edge`: the device's command line. A thin click shell over the library.

Results go to stdout, logs to stderr. Domain errors (edge.errors) become one-line messages
and a non-zero exit here, at the boundary; nothing below prints.
"""

from __future__ import annotations

import base64
import errno
import faulthandler
import functools
import json
import logging
import math
import os
import shlex
import signal
import sys
import threading
import time
import zlib
from contextlib import contextmanager, suppress

import click

from edge import __version__
from edge.backends import BACKENDS
from edge.capture.sources import STDIN_FORMATS
from edge.errors import OptionError, OutputError, SemanticACError
from edge.listen import ListenOptions, ListenSummary, plural, reading_notes_of, untrained_labels
from edge.malloc import limit_arenas
from edge.service.unit import CONFIG_PATH, UNIT_PATH, WATCHDOG_SEC

log = logging.getLogger(__name__)


def setup_logging(verbosity: int) -> None:
    """Logs on stderr, configured once: -v for info, -vv for debug. When journald reads stderr
    ($JOURNAL_STREAM names it) lines carry no timestamp (the journal adds its own) but a
    syslog priority prefix (<3> error ... <7> debug), so `journalctl -p warning` works."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    for stream in (sys.stdout, sys.stderr):  # what a stream cannot spell is printed escaped, not a traceback: a
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):  # label in an ISO-8859-1
            stream.reconfigure(errors="backslashreplace")  # locale, a file name that is no UTF-8 in a UTF-8 one
    if stderr_is_journal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
        logging.basicConfig(level=level, handlers=[handler])
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(ZonedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=level, handlers=[handler])


class ZonedFormatter(logging.Formatter):
    """Local times with their UTC offset (2026-12-07 03:43:53,837+0100): beside an event's time in UTC on
    the same line, a bare local time read as another clock."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return super().formatTime(record, datefmt) + time.strftime("%z", self.converter(record.created))


def apply_log_level(name: str) -> None:
    """The service config's `service.log_level` (debug ... error) for the root logger, unless the
    command line's -v / -vv asked for more."""
    root, level = logging.getLogger(), getattr(logging, name.upper())
    asked = root.getEffectiveLevel()
    root.setLevel(level if asked >= logging.WARNING else min(asked, level))


def stderr_is_journal() -> bool:
    """$JOURNAL_STREAM is `device:inode` of the stream journald reads; it counts only when it is
    stderr's (a child whose stderr was redirected inherits the variable, not the stream)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # no stderr, or not a real file (tests)
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


class JournalFormatter(logging.Formatter):
    """`<priority>message`: sd-daemon(3)'s prefixes, read by journald (SyslogLevelPrefix=yes)."""

    PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITIES.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{priority}>{super().format(record)}"


def domain_errors(func):
    """Turn an edge error (or a missing optional package) into click's one-line `Error: ...`
    and exit status 1; a bad option value into a usage error (exit status 2)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except OptionError as err:
            raise click.UsageError(str(err)) from None
        except (SemanticACError, ImportError) as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:
            if err.errno != errno.ENAMETOOLONG:
                raise
            raise click.ClickException(name_too_long(err)) from None

    return wrapper


def name_too_long(err: OSError) -> str:
    """The message for a path the file system cannot hold (Path.exists() raises it, where it says False
    of a missing file)."""
    return (
        f"{err.filename}: file name too long (a name is at most 255 bytes on most file systems, a path 4096): "
        "shorten it"
    )


class PipeGroup(click.Group):
    """A reader that stops early (`semanticac-edge labels esc50 | head -1`) is not a failure: exit 0,
    as `listen | head` does (click exits 1 for a broken pipe, which fails a script under pipefail).
    When journald reads stderr, the error that ends a command is a line at its priority, err (`<3>Error:
    ...`; click's own line was read as info, so `journalctl -p warning` left out why the service stopped),
    and a bug's traceback follows a line at crit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            discard_stdout()
            ctx.exit(0)
        except (click.UsageError, click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as err:
            if not stderr_is_journal():
                raise
            click.echo(f"<3>Error: {err.format_message()}", err=True)
            ctx.exit(err.exit_code)
        except Exception as err:
            if stderr_is_journal():
                log.critical(
                    "stops on an unexpected error, %s (a bug: please report it with this traceback)",
                    f"{type(err).__name__}: {err}",
                    exc_info=True,
                )
                ctx.exit(1)
            raise


@click.group(cls=PipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semanticac-edge")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Streaming sound-event classification on the edge (SemanticAC).

    Labels are free text in a YAML file; a new label is a YAML edit, not a retrain.
    """
    limit_arenas()  # before the threads: a microphone reopened for months grows the process otherwise
    setup_logging(verbose)


BUNDLE_OPTION = click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=str),
    default=None,
    help="Model bundle folder. Default: $SEMANTICAC_BUNDLE, else the demo bundle shipped with the package.",
)


def one_label_set(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> str | None:
    """--labels given once (taken as `multiple` only to catch a second one: click keeps the last)."""
    if len(value) > 1:
        raise click.BadParameter(
            f"given {len(value)} times ({', '.join(value)}): this command takes one label set; put every label "
            "you need into one set's YAML"
        )
    return value[0] if value else None


LABELS_OPTION = click.option(
    "--labels",
    "labels_spec",
    multiple=True,
    callback=one_label_set,
    metavar="NAME|PATH",
    help="A label-set YAML file, or the name of a shipped set (urban, esc50).",
)


@main.command()
@click.argument("spec", metavar="NAME|PATH")
@BUNDLE_OPTION
@domain_errors
def labels(spec: str, bundle: str | None) -> None:
    """Check a label set and show what will be embedded, with each prompt's token count for the
    bundle's text tower; exit non-zero when a prompt is longer than the tower reads."""
    from edge.labels.embeddings import token_counts
    from edge.labels.labelset import resolve_label_set
    from edge.outputs.sinks import columns, padded

    label_set = resolve_label_set(spec)
    tokenizer, limit = _bundle_tokenizer(bundle)
    origin = "shipped set" if label_set.shipped else "file"
    click.echo(
        f"label set {label_set.name!r} ({origin} {label_set.source}): {plural(len(label_set.labels), 'label')}, "
        f"sha256 {label_set.sha256[:16]}"
    )
    over = 0
    for label, agree in zip(label_set.labels, label_set.agreement()):
        group = f"  [{label.group}]" if label.group else ""
        agreement = "" if agree is None else f", agree {agree:g}"
        click.echo(
            f"  {padded(label.name, max(24, columns(label.name)))} threshold {label.threshold:g}{agreement}{group}"
        )
        counts = token_counts(tokenizer, list(label.prompts)) if tokenizer else [None] * len(label.prompts)
        for prompt, count in zip(label.prompts, counts):
            flag = "" if count is None else f"  ({count} tokens)"
            if count is not None and count > limit:
                over += 1
                flag = f"  ({count} tokens: OVER the text tower's limit of {limit})"
            click.echo(f"      {prompt!r}{flag}")
    if over:
        raise click.ClickException(
            f"{over} prompt(s) of label set {label_set.name!r} are longer than the text "
            f"tower's {limit} tokens and would be cut: shorten them in {label_set.source}"
        )


def _bundle_tokenizer(bundle: str | None):
    """(tokenizer, context length) of the bundle's text tower, or (None, None) when the default
    bundle has none; an explicit --bundle or $SEMANTICAC_BUNDLE that cannot be read is an error."""
    from edge.bundle import BUNDLE_ENV, resolve_bundle
    from edge.labels.tokenizers import load_tokenizer

    try:
        found = resolve_bundle(bundle)
        if found.meta.text is None:
            log.info("bundle %s has no text tower: token counts not shown", found.path)
            return None, None
        tokenizer = load_tokenizer(found.tokenizer_dir)
    except SemanticACError as err:
        if bundle or os.environ.get(BUNDLE_ENV):
            raise
        log.info("no bundle tokenizer (%s): token counts not shown", err)
        return None, None
    return tokenizer, tokenizer.context_length


@main.command()
@BUNDLE_OPTION
@LABELS_OPTION
@click.option("--verify/--no-verify", default=True, show_default=True, help="Hash the ONNX files.")
@domain_errors
def info(bundle: str | None, labels_spec: str | None, verify: bool) -> None:
    """Show a bundle (and whether a label set's embeddings are ready for it)."""
    from edge.bundle import resolve_bundle

    found = resolve_bundle(bundle)
    if verify:
        found.verify()
    meta = found.meta
    fe = meta.frontend
    click.echo(f"bundle     {found.path}")
    click.echo(f"model_id   {meta.model_id}")
    click.echo(f"audio      {meta.audio.file} {list(meta.audio.inputs)} -> {list(meta.audio.outputs)}")
    click.echo(f"text       {meta.text.file if meta.text else 'none (label embeddings must be precomputed)'}")
    click.echo(
        f"embedding  {meta.embedding_dim}-d, logit scale {meta.logit_scale:g}, "
        f"encoder {meta.text_encoder.get('kind', '?')}"
    )
    click.echo(
        f"frontend   {fe.sample_rate} Hz, {fe.n_mels} mels {fe.f_min:g}-{fe.f_max:g} Hz, hop {fe.hop_length}, "
        f"{fe.frames} frames; trained on {meta.clip_seconds:g} s clips"
    )
    click.echo(
        "gain       " + ("none: windows at the stream's own level" if meta.gain is None else meta.gain.describe())
    )
    click.echo(f"license    {meta.license}")
    trained = meta.training.get("class_names")
    if isinstance(trained, list) and trained:
        shown = ", ".join(map(str, trained[:8])) + (f", ... ({len(trained)} in all)" if len(trained) > 8 else "")
        click.echo(f"trained    {len(trained)} classes: {shown}")
    validation = meta.training.get("validation")
    validation = validation if isinstance(validation, dict) else {}
    mean = validation.get("mean")
    if isinstance(mean, dict) and mean:
        runs = len(validation.get("runs") or [])
        figures = ", ".join(
            f"{key.removeprefix('val_accuracy_')} {value:.1%}"
            for key, value in mean.items()
            if isinstance(value, float)
        )
        click.echo(
            f"held out   the same recipe on clips it never trained on ({plural(runs, 'run')}, last epoch): {figures}"
        )
    scoring = meta.scoring
    click.echo(
        f"scoring    {scoring['kind']}" + (f", logit bias {scoring['logit_bias']:g}" if "logit_bias" in scoring else "")
    )
    from edge.vocabulary import WEAK_NAME_ADVICE, Vocabulary, familiar_step

    emb = None
    if labels_spec:  # first: a damaged embeddings file is named with the command that repairs it
        from edge.labels.embeddings import label_embeddings_for
        from edge.labels.labelset import resolve_label_set

        label_set = resolve_label_set(labels_spec)
        emb = label_embeddings_for(found, label_set)  # a set not embedded yet: as listen's first start does
    vocabulary = Vocabulary.from_bundle(found)
    if vocabulary is not None and found.meta.vocabulary is not None:
        graph = found.meta.vocabulary["graph"]
        click.echo(
            f"vocabulary {graph.file} {list(graph.inputs)} -> {len(vocabulary.names)} named classes "
            f"({vocabulary.source}): scores new labels, run only for a set that has one"
            + ("" if vocabulary.head is None and vocabulary.familiar is None else " or a trained label (below)")
        )
        if vocabulary.head is not None:
            head, hidden = found.meta.vocabulary["head"], vocabulary.head.hidden
            width = vocabulary.head.weights.shape[1] if hidden is None else hidden[0].shape[1]
            click.echo(
                f"head       {head['file']}: {len(vocabulary.head.bias)} trained labels from the graph's "
                f"{head['input']!r} ({width} wide"
                + ("" if hidden is None else f", through {hidden[0].shape[0]} hidden units")
                + f"), weight {head['weight']:g} beside the student's {1 - head['weight']:g}"
                + (
                    ""
                    if head.get("agree") is None
                    else f"; an event needs the student alone at {head['agree']:g} or more"
                )
                + f", fitted on {head['clips']} clips"
            )
        if vocabulary.familiar is not None:
            familiar = found.meta.vocabulary["familiar"]
            click.echo(
                f"familiar   {familiar['file']}: what each trained label's own clips made the vocabulary say "
                f"({familiar['clips']} clips); a class {familiar_step(familiar)} above it that no label of the set "
                f"is near holds the label back"
            )
    if emb is not None:
        click.echo(f"labels     {label_set.name}: {plural(len(emb.labels), 'label')} embedded, ready")
        own = {label.name: a for label, a in zip(label_set.labels, label_set.agreement()) if a is not None}
        if own:
            click.echo(
                "  agree: the set's own, over the bundle's: "
                + ", ".join(f"{name} {a:g}" for name, a in own.items())
                + (
                    ""
                    if vocabulary is not None and vocabulary.head is not None
                    else " (no effect: the bundle has no head)"
                )
            )
        untrained = untrained_labels(found, label_set)
        if untrained:
            click.echo(
                f"  untrained: {', '.join(untrained)} (this model never trained them: scored by their text alone)"
            )
        if vocabulary is not None:
            fusion = vocabulary.fusion(emb.embeddings, label_set.reads)
            meanings = fusion.meanings(emb.labels, vocabulary.names)
            for label, meaning in meanings.items():
                click.echo(f"  new: {label} (no one trained it): scored as {meaning}")
            for label, nearest in fusion.weakly_named(emb.labels, vocabulary.names).items():
                click.echo(f"  weak: {label}: {WEAK_NAME_ADVICE.format(nearest=nearest)}")
            for _, message in reading_notes_of(found, label_set):
                click.echo(f"  unread: {message}")
            for _, message in vocabulary.kin_notes(emb.embeddings, emb.labels, label_set.reads):
                click.echo(f"  kin: {message}")
            if meanings and fusion.ceiling is not None:
                click.echo(
                    "  (ceiling: the most the training audio made the vocabulary say that class; a new label's "
                    "score counts each class against it, at most 1)"
                )
            if meanings:
                threshold = {label.name: label.threshold for label in label_set.labels}
                click.echo(
                    f"  new labels' thresholds: {', '.join(f'{name} {threshold[name]:g}' for name in meanings)}; "
                    "the vocabulary also hears near kin as them (rain as a thunderstorm, a sneeze as a cough): "
                    "fit them on the site's own recordings with `semanticac-calibrate thresholds`"
                )
            intruders = fusion.intruders(vocabulary.names)
            if intruders:
                click.echo(
                    f"  unknown sounds: {len(intruders)} sounds the set has no label for (e.g. "
                    f"{', '.join(intruders[:: max(1, len(intruders) // 6)][:6])}) hold back a trained label's "
                    "events where one of them is heard more than in that label's own recordings"
                )
            for label, by in fusion.explained(emb.labels).items():
                click.echo(
                    f"  gives way: {label} is not reported where it is heard no more than the recordings of "
                    f"{', '.join(by)} made the vocabulary hear it"
                )
            outweighed = fusion.outweighed(emb.labels)
            if outweighed:
                click.echo(
                    f"  outweighed: {', '.join(outweighed)} (the vocabulary cannot hear them by name) are held back "
                    "where a new label of the set is heard far more than in their own recordings"
                )
            vetoed = fusion.vetoed(emb.labels)
            if vetoed:
                click.echo(
                    f"  held back beside new labels: {', '.join(vetoed)} start{'s' if len(vetoed) == 1 else ''} no "
                    "event where a new label is heard, "
                    f"unless the vocabulary hears them too (veto power {vocabulary.veto_power:g})"
                )


@main.command("embed-labels")
@BUNDLE_OPTION
@click.option(
    "--labels",
    "label_specs",
    required=True,
    multiple=True,
    metavar="NAME|PATH",
    help="A label-set YAML file, or the name of a shipped set (repeat the option for several).",
)
@click.option(
    "--into",
    type=click.Choice(["auto", "bundle", "cache"]),
    default="auto",
    show_default=True,
    help="auto: the bundle's labels/ when it can be written, else the user cache of this machine.",
)
@click.option("--threads", type=int, default=None, help="ONNX Runtime threads (default: all usable cores).")
@domain_errors
def embed_labels(bundle: str | None, label_specs: tuple[str, ...], into: str, threads: int | None) -> None:
    """Compute label embeddings with the bundle's text tower (no torch) and write each set's .npz
    atomically, so `listen` starts without embedding them."""
    from edge.bundle import resolve_bundle
    from edge.labels.embeddings import embed_label_sets

    if threads is not None:  # checked as listen checks it: 1 to the cores this process may use
        ListenOptions(labels=label_specs[0], threads=threads)
    found = resolve_bundle(bundle)
    found.verify()
    for written in embed_label_sets(found, label_specs, into=into, threads=threads):
        click.echo(written.describe())


class Stop(threading.Event):
    """The event that stops a run; `signalled`: SIGINT or SIGTERM asked for it (not the run itself)."""

    signalled = False


@contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM set the returned Stop (a clean stop), and are restored afterwards."""
    stop = Stop()

    def asked(*_) -> None:
        stop.signalled = True
        stop.set()

    previous = {sig: signal.signal(sig, asked) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def discard_stdout() -> None:
    """Point stdout at /dev/null once writing to it failed, so that the interpreter's last flush
    at exit does not fail a second time with a traceback-like report."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (AttributeError, OSError, ValueError):  # no stdout at all, or not a real file (tests)
        pass


def run_pipeline(options: ListenOptions, source=None) -> ListenSummary:
    """Run the listen pipeline until its source ends or SIGINT/SIGTERM; exit 1 when the source
    or backend failed mid-stream (the `status` line with level error is already on stdout)."""
    from edge.listen import listen as listen_pipeline

    with stop_on_signals() as stop:
        try:
            summary = listen_pipeline(options, stop=stop, source=source)
        except OutputError as err:
            discard_stdout()
            if err.broken_pipe:  # the reader went away (e.g. `| head`): nothing left to say
                raise SystemExit(0) from None
            raise click.ClickException(str(err)) from None
    if summary.error:
        raise click.ClickException(summary.error)
    return summary


DEFAULTS = ListenOptions.defaults()
# The pipeline options that listen, bench and semanticac-calibrate share, defined once (the
# values are ListenOptions', which checks them).
WINDOW_OPTION = click.option(
    "--window", type=float, default=None, help="Window length in seconds. Default: the bundle's clip length."
)
HOP_OPTION = click.option(
    "--hop", type=float, default=DEFAULTS["hop"], show_default=True, help="Seconds between windows."
)
THREADS_OPTION = click.option(
    "--threads", type=int, default=None, help="ONNX Runtime threads (default: all usable cores)."
)
BACKEND_OPTION = click.option(
    "--backend",
    "backend_choice",
    type=click.Choice(list(BACKENDS)),
    default=DEFAULTS["backend"],
    show_default=True,
    help="auto: a TensorRT engine built for this GPU, else ONNX Runtime.",
)
SMOOTH_OPTION = click.option(
    "--smooth",
    type=int,
    default=DEFAULTS["smooth"],
    show_default=True,
    help="Windows averaged before event decisions (1: none).",
)
MIN_DURATION_OPTION = click.option(
    "--min-duration",
    type=float,
    default=DEFAULTS["min_duration"],
    show_default=True,
    help="Seconds a label must stay above its threshold before its event starts.",
)
RELEASE_OPTION = click.option(
    "--release",
    "release_ratio",
    type=float,
    default=DEFAULTS["release"],
    show_default=True,
    help="An event ends below threshold x this ratio (hysteresis), in (0, 1].",
)
HOLD_OPTION = click.option(
    "--hold",
    type=float,
    default=DEFAULTS["hold"],
    show_default=True,
    metavar="SECONDS",
    help="An event whose score falls below release is held open this long: back at its threshold within it, "
    "it goes on (a dog barking on and off: one event, not one per bark); it ends dated where the score fell, "
    "its end said this late. 0: off (a service: 30).",
)
MIN_LEVEL_OPTION = click.option(
    "--min-level",
    type=float,
    default=None,
    metavar="DBFS",
    help="Level gate: windows quieter than this (dBFS, e.g. -60) start no event. Default: off "
    "(digital silence never starts one).",
)
AGREE_OPTION = click.option(
    "--agree",
    type=float,
    default=None,
    metavar="SCORE",
    help="An event of a trained label needs the student alone to score it this much, for every label "
    "(0: no agreement: more recall, more false alarms). Default: the label set's `agree:`, else the bundle's.",
)


@main.command()
@LABELS_OPTION
@BUNDLE_OPTION
@click.option(
    "--input",
    "input_path",
    default=None,
    metavar="FILE|-",
    help="Audio file (played in real time, or --fast), or - for raw PCM on stdin. Default: the microphone.",
)
@click.option(
    "--device",
    default=None,
    metavar="NAME|INDEX",
    help="Input device of the microphone (see `semanticac-edge devices`).",
)
@WINDOW_OPTION
@HOP_OPTION
@click.option(
    "--top-k", "top_k", type=int, default=DEFAULTS["top_k"], show_default=True, help="Labels shown per window."
)
@click.option(
    "--heard",
    type=int,
    default=DEFAULTS["heard"],
    show_default=True,
    help="Also show the bundle vocabulary's N best AudioSet classes per window: what it hears, words for a new "
    "label's `prompts:` (0: none).",
)
@click.option("--json", "json_lines", is_flag=True, help="One JSON object per line (schema 1) on stdout.")
@BACKEND_OPTION
@click.option("--fast", is_flag=True, help="Read --input FILE as fast as possible instead of in real time.")
@click.option("--rate", type=int, default=None, help="Sample rate of raw PCM on stdin (Hz); --input - only.")
@click.option(
    "--format",
    "sample_format",
    type=click.Choice(list(STDIN_FORMATS)),
    default=None,
    help="Sample format of raw PCM on stdin (default s16le); --input - only.",
)
@click.option("--channels", type=int, default=None, help="Channels of raw PCM on stdin (default 1); --input - only.")
@SMOOTH_OPTION
@MIN_DURATION_OPTION
@RELEASE_OPTION
@HOLD_OPTION
@THREADS_OPTION
@click.option(
    "--max-batch",
    type=int,
    default=DEFAULTS["max_batch"],
    show_default=True,
    help="Windows run together when several are ready; beyond it a live source drops the oldest.",
)
@MIN_LEVEL_OPTION
@AGREE_OPTION
@click.option(
    "--reconnect", is_flag=True, help="Reopen a lost microphone (audio_lost / audio_restored) instead of exiting 1."
)
@click.option(
    "--stale-seconds",
    type=float,
    default=DEFAULTS["stale_seconds"],
    show_default=True,
    help="Microphone: no audio for this long is a lost device.",
)
@click.option(
    "--max-silence",
    type=float,
    default=None,
    help="Microphone: digital silence for this many seconds is a lost device (default: never).",
)
@click.option(
    "--backoff-max",
    type=float,
    default=DEFAULTS["backoff_max"],
    show_default=True,
    help="With --reconnect: the longest wait between tries to reopen the device (seconds).",
)
@domain_errors
def listen(
    labels_spec,
    bundle,
    input_path,
    device,
    window,
    hop,
    top_k,
    heard,
    json_lines,
    backend_choice,
    fast,
    rate,
    sample_format,
    channels,
    smooth,
    min_duration,
    release_ratio,
    hold,
    threads,
    max_batch,
    min_level,
    agree,
    reconnect,
    stale_seconds,
    max_silence,
    backoff_max,
):
    """Listen and print the top labels of every window, and start/end events.

    Exit status: 0 when the input ends or SIGINT/SIGTERM stops it; 1 when something named cannot
    be used (an input file, a label set, a bundle: the error says which) or the source or the
    model fails mid-stream (after scoring what came before and ending every open event); 2 for
    a bad option (a value out of range, two options that do not go together).
    """
    run_pipeline(
        ListenOptions(
            labels=labels_spec or "",
            bundle=bundle,
            input=input_path,
            device=device,
            window=window,
            hop=hop,
            top_k=top_k,
            heard=heard,
            json=json_lines,
            backend=backend_choice,
            fast=fast,
            rate=rate,
            sample_format=sample_format,
            channels=channels,
            smooth=smooth,
            min_duration=min_duration,
            release=release_ratio,
            hold=hold,
            threads=threads,
            max_batch=max_batch,
            min_level=min_level,
            agree=agree,
            # microphone-only: their defaults with another source (ListenOptions refuses other values)
            reconnect=reconnect,
            stale_seconds=stale_seconds,
            max_silence=max_silence,
            backoff_max=backoff_max,
        )
    )


@main.command()
@click.option(
    "--labels",
    "labels_spec",
    default=("urban",),
    multiple=True,
    callback=one_label_set,
    show_default=True,
    metavar="NAME|PATH",
    help="A label-set YAML file, or the name of a shipped set (urban, esc50).",
)
@BUNDLE_OPTION
@click.option("--fast", is_flag=True, help="Read the demo scene as fast as possible instead of in real time.")
@click.option(
    "--input-kind",
    type=click.Choice(["auto", "microphone", "file"]),
    default="auto",
    show_default=True,
    envvar="SEMANTICAC_DEMO_INPUT",
    show_envvar=True,
    help="auto: the microphone if PortAudio sees one, else the demo scene file; or force either.",
)
@domain_errors
def demo(labels_spec, bundle, fast, input_kind) -> None:
    """Listen with what this machine has: the microphone until Ctrl-C, else a demo scene file
    (real UrbanSound8K clips from $SEMANTICAC_DATA, or a synthesised street) until it ends."""
    from edge.tools.demo import choose_demo_input, scene_summary

    demo_log = logging.getLogger("edge.tools.demo")
    if demo_log.getEffectiveLevel() > logging.INFO:  # the demo says what it plays, even without -v
        demo_log.setLevel(logging.INFO)
    scene = choose_demo_input(input_kind, labels_spec, bundle, fast)  # None: the default microphone
    options = ListenOptions(
        labels=labels_spec,
        bundle=bundle,
        input=None if scene is None else str(scene.path),
        fast=fast and scene is not None,
    )
    summary = run_pipeline(options)
    if scene is not None:
        for line in scene_summary(scene.segments, summary.by_label, options):
            demo_log.info("%s", line)


@main.command()
@domain_errors
def devices() -> None:
    """List audio input devices (index, name, channels, default rate)."""
    from edge.capture.sources import list_input_devices

    found = list_input_devices(rescan=True)  # a device plugged in since PortAudio started
    if not found:
        click.echo("no input devices: PortAudio sees no microphone (see `semanticac-edge doctor`)")
        return
    for dev in found:
        mark = "*" if dev.is_default else " "
        click.echo(f"{mark} {dev.index:>3}  {dev.name}  ({dev.channels} ch, {dev.default_rate:g} Hz)")


def finite(low: float, high: float, allowed: str, low_open: bool = False):
    """A click callback for a number option: finite and in [low, high] (low itself excluded with
    `low_open`), else a usage error naming the value and `allowed` (click's FloatRange lets nan and
    inf through: a traceback, or a run that never ends)."""

    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is None:
            return None
        above = value > low if low_open else value >= low
        if not (math.isfinite(value) and above and value <= high):
            raise click.BadParameter(f"{value!r} is not allowed: use {allowed}")
        return value

    return check


@main.command("build-engine")
@BUNDLE_OPTION
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default="fp16", show_default=True)
@click.option(
    "--max-batch",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="Largest batch the engine's optimisation profile accepts.",
)
@click.option(
    "--workspace",
    "workspace_gib",
    type=float,
    callback=finite(0.0, 1024.0, "GiB > 0, at most 1024", low_open=True),
    default=2.0,
    show_default=True,
    help="Builder workspace memory (GiB).",
)
@domain_errors
def build_engine(bundle, precision, max_batch, workspace_gib) -> None:
    """Compile the bundle's audio graph into a TensorRT engine for this GPU (on the device)."""
    from edge.backends.tensorrt.builder import build_engine as build
    from edge.bundle import resolve_bundle

    plan = build(resolve_bundle(bundle), precision=precision, max_batch=max_batch, workspace_gib=workspace_gib)
    click.echo(f"engine {plan}")


@main.command()
@BUNDLE_OPTION
@LABELS_OPTION
@domain_errors
def doctor(bundle: str | None, labels_spec: str | None) -> None:
    """Check everything a field install needs; exit non-zero if anything FAILs."""
    from edge.tools.doctor import failed, run_checks, summary

    checks = run_checks(bundle, labels_spec)
    for check in checks:
        for line in check.lines():
            click.echo(line)
    click.echo(summary(checks))
    if failed(checks):
        raise SystemExit(1)


@main.command()
@BUNDLE_OPTION
@click.option(
    "--backend",
    "backends",
    type=click.Choice(["onnxruntime", "tensorrt"]),
    multiple=True,
    help="Backend to time (repeat the option). Default: onnxruntime, and tensorrt when an engine for this GPU exists.",
)
@WINDOW_OPTION
@HOP_OPTION
@click.option(
    "--seconds",
    type=float,
    callback=finite(0.0, 3600.0, "a number of seconds > 0, at most 3600", low_open=True),
    default=10.0,
    show_default=True,
    help="Seconds of timing per backend (after warm-up).",
)
@THREADS_OPTION
@click.option(
    "--labels",
    "labels_spec",
    default=("urban",),
    multiple=True,
    callback=one_label_set,
    show_default=True,
    metavar="NAME|PATH",
    help="Label set listen would run: whether the vocabulary graph counts in the window's cost, and the set of the "
    "end-to-end run of the whole listen pipeline.",
)
@click.option(
    "--pipeline-seconds",
    type=float,
    callback=finite(0.0, 3600.0, "seconds from 0 (skips that run) to 3600 (its audio is made in memory)"),
    default=None,
    help="Seconds of audio through the whole listen pipeline (at least a window); 0 skips that run.  [default: 30]",
)
@click.option(
    "--live-seconds",
    type=float,
    callback=finite(0.0, 3600.0, "seconds from 0 (skips that run) to 3600 (it takes that long)"),
    default=None,
    help="Seconds of a live run (paced as a microphone, 48 kHz stereo): the CPU a live stream takes, from its first "
    "window on (so at least the window + 2 s); 0 skips it.  [default: 20]",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout instead of the table.")
@domain_errors
def bench(
    bundle, backends, window, hop, seconds, threads, labels_spec, pipeline_seconds, live_seconds, as_json
) -> None:
    """Time the bundle here: window latency p50/p99, frontend per hop, real-time factor, smallest hop,
    the whole listen pipeline on a file as fast as it runs, and the CPU of a live stream."""
    import json

    from edge.tools.bench import format_bench, run_bench

    options = ListenOptions(labels=labels_spec, bundle=bundle, window=window, hop=hop, threads=threads)
    more = {
        key: value
        for key, value in (("pipeline_seconds", pipeline_seconds), ("live_seconds", live_seconds))
        if value is not None
    }
    result = run_bench(options, list(backends) or None, seconds=seconds, **more)
    click.echo(json.dumps(result) if as_json else format_bench(result))


# --- the service (edge.service) -----------------------------------------------------------------


class ConfigExit(click.ClickException):
    """A config, bundle or label set that a restart cannot fix: exit 78 (EX_CONFIG), so systemd's
    RestartPreventExitStatus=78 stops it instead of looping."""

    exit_code = 78


def service_errors(func):
    """CONFIG_ERRORS -> exit 78 with a one-line message; any other edge error -> exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from edge.service.serve import CONFIG_ERRORS

        try:
            return func(*args, **kwargs)
        except CONFIG_ERRORS as err:
            raise ConfigExit(str(err)) from None
        except SemanticACError as err:
            raise click.ClickException(str(err)) from None
        except OSError as err:
            if err.errno != errno.ENAMETOOLONG:
                raise
            raise ConfigExit(name_too_long(err)) from None

    return wrapper


CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=str),  # a folder: load_config's error (exit 78), not click's (exit 2)
    help="The service config (YAML; `semanticac-edge install-service --print` shows a commented one).",
)
SET_OPTION = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a key of the config (the value is YAML), e.g. --set listen.hop=0.5; repeat it for several.",
)


@main.command()
@CONFIG_OPTION
@SET_OPTION
@click.option(
    "--state-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=str),
    help="Where the event log and clips go (service.state_dir of the config; default "
    "$XDG_STATE_HOME/semanticac-edge, ~/.local/state/semanticac-edge without it). Under systemd its "
    "$STATE_DIRECTORY wins over both: the unit's file system is read-only elsewhere.",
)
@service_errors
def serve(config_path: str, overrides: tuple[str, ...], state_dir: str | None) -> None:
    """Run the listen pipeline as a service with the config's outputs (MQTT, metrics, event log,
    clips) until SIGTERM/SIGINT, telling systemd how it goes (Type=notify, watchdog). SIGHUP
    (`systemctl reload`) checks the config again and, when it checks out, starts again in place
    with it (same process: RELOADING=1, then READY=1); a config with errors is logged and the
    service goes on as it was.

    Exit status: 0 when stopped or the input file ends; 78 for a bad config, bundle or label
    set (systemd does not restart it); 1 when the audio or the model fails.
    """
    from edge.service.config import load_config
    from edge.service.config import state_dir as resolve_state_dir
    from edge.service.notify import Notifier
    from edge.service.serve import CONFIG_ERRORS, tell_mqtt_of_config_error
    from edge.service.serve import serve as run_service

    # a SIGHUP outside its handler (loading the config; after the run, across the exec: reload_on_sighup
    # puts this back) is ignored, not the end of the process; so are SIGUSR1 and SIGUSR2 (logrotate's
    # habit), which the run's handler only notes
    for sig in (signal.SIGHUP, *UNANSWERED_SIGNALS):
        signal.signal(sig, signal.SIG_IGN)
    reloaded = os.environ.pop(CHECKED_CONFIG_ENV, None)  # a reload's: the config exactly as it checked it
    if not faulthandler.is_enabled():  # a fatal signal (SIGBUS on the event log's mapped -shm file, SIGSEGV in a
        with suppress(RuntimeError, ValueError, OSError):  # library) leaves its traceback in the journal;
            faulthandler.enable()  # with stderr closed (2>&-) there is nowhere to write it, and the service runs
    text, label_texts = checked_handover(reloaded, config_path)
    try:
        config = load_config(config_path, overrides, text)
        apply_log_level(config.service.log_level)
        folder = resolve_state_dir(config, state_dir)
        notifier = Notifier.from_environ()
        running = (config, folder, state_dir)
        with stop_on_signals() as stop, reload_on_sighup(config_path, overrides, stop, notifier, running) as reload:
            summary = run_service(
                config, folder, stop=stop, notifier=notifier, label_texts=label_texts, keep_lock=reload
            )
    except CONFIG_ERRORS as err:  # exit 78 (service_errors), which systemd does not restart
        tell_mqtt_of_config_error(config_path, overrides, text, err)
        raise
    if reload.is_set() and not stop.signalled:  # a stop asked for meanwhile wins
        start_again_in_place()
    if reload.is_set():  # systemd was told RELOADING=1: now it is a stop
        notifier.stopping("stopping", after_reloading=True)
    if summary.error:
        raise click.ClickException(summary.error)


UNANSWERED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)  # their default ends a process with no line and open events
CHECKED_CONFIG_ENV = "SEMANTICAC_CHECKED_CONFIG"  # a reload hands what it checked to the process it becomes
HANDOVER_MAX_CHARS = 100_000  # under Linux's 128 KiB for one environment string (more: execv fails, E2BIG)


def handover(config_path: str, text: str, label_texts: dict[str, str]) -> str:
    """$SEMANTICAC_CHECKED_CONFIG: JSON {path, text, labels: {absolute path: text}}, compressed (`z:` +
    base64 of zlib) where it is too long for the environment as it is; label-set files too long even
    then are left out, and said (the new process reads them again, unchecked)."""
    given = json.dumps({"path": config_path, "text": text, "labels": label_texts})
    if len(given) <= HANDOVER_MAX_CHARS:
        return given
    packed = "z:" + base64.b64encode(zlib.compress(given.encode(), 9)).decode()
    if len(packed) <= HANDOVER_MAX_CHARS:
        return packed
    log.warning(
        "SIGHUP: the label-set files are too long to hand over (%d characters compressed, at most %d): the new "
        "run reads them again, so do not save them until it is ready",
        len(packed),
        HANDOVER_MAX_CHARS,
    )
    return json.dumps({"path": config_path, "text": text, "labels": {}})


def checked_handover(handed: str | None, config_path: str) -> tuple[str | None, dict[str, str]]:
    """What a reload checked (`handed`: $SEMANTICAC_CHECKED_CONFIG, see handover) when it is this config's:
    the config text (None: read the file) and the label-set files' texts. A file saved since the check is
    said (the config here, a label set by edge.labels.labelset.label_files), and read at the next SIGHUP."""
    from edge.service.config import config_text

    if not handed:
        return None, {}
    try:
        given = json.loads(zlib.decompress(base64.b64decode(handed[2:])) if handed.startswith("z:") else handed)
    except (ValueError, zlib.error):  # binascii.Error is a ValueError
        given = None
    if not isinstance(given, dict) or given.get("path") != config_path or not isinstance(given.get("text"), str):
        return None, {}
    labels = given.get("labels")
    label_texts = (
        {path: text for path, text in labels.items() if isinstance(text, str)} if isinstance(labels, dict) else {}
    )
    try:
        changed = config_text(config_path) != given["text"]
    except SemanticACError:
        changed = True
    if changed:
        log.warning(
            "%s changed after the reload checked it: the service starts with the config as checked; send SIGHUP "
            "(systemctl reload) again to check the new one",
            config_path,
        )
    return given["text"], label_texts


@contextmanager
def reload_on_sighup(config_path: str, overrides: tuple[str, ...], stop: threading.Event, notifier, running):
    """SIGHUP checks the config again on a thread of its own: when it checks out, the returned event
    is set, systemd is told RELOADING=1 and `stop` ends the run (the caller then starts again in
    place, from the text that was checked: one saved meanwhile is not started unchecked); when not,
    the error is logged and the run goes on with the config it started with. `running`: (config,
    state folder, --state-dir) of this run, for what only a change of them can break (reload_problems).
    SIGUSR1 and SIGUSR2 are said in the log, by the same thread (not in the handler: a log line written
    there can meet the one the run is writing), and otherwise ignored."""
    from edge.labels.embeddings import Stopped
    from edge.labels.labelset import label_files
    from edge.service.config import config_text
    from edge.service.config import state_dir as resolve_state_dir
    from edge.service.serve import CONFIG_ERRORS, checked, reload_problems

    hup, reload = threading.Event(), threading.Event()
    current, current_state, state_option = running

    unanswered: list[int] = []

    def check_when_asked() -> None:
        while not stop.is_set():
            while unanswered:
                log.warning(
                    "%s ignored: the service answers SIGHUP (systemctl reload: check the config and start again "
                    "with it) and SIGTERM (stop)",
                    signal.Signals(unanswered.pop(0)).name,
                )
            if not hup.wait(0.5):
                continue
            hup.clear()
            try:
                text = config_text(config_path)
                with label_files() as label_texts:
                    config, _ = checked(config_path, overrides, text, stop)
                reload_problems(current, config, current_state, resolve_state_dir(config, state_option))
            except CONFIG_ERRORS as err:
                # the error names its key or file: the config's, or its label set's (`the config has an error`
                # had sent a person to the config for a label-set file saved half-written)
                log.error("SIGHUP: not reloaded: %s; the service goes on as it was", err)
                continue
            except Stopped:  # asked to stop while a new label set was being embedded
                return
            if stop.is_set():  # asked to stop while it was checked: a stop, not a reload
                return
            log.info("SIGHUP: %s checks out: the service starts again in place with it", config_path)
            os.environ[CHECKED_CONFIG_ENV] = handover(config_path, text, label_texts)
            reload.set()
            # the new run may embed a new label set before its loop pings the watchdog again
            notifier.reloading("reloading: starting again with the config", config.systemd.extend_timeout)
            stop.set()

    previous = {signal.SIGHUP: signal.signal(signal.SIGHUP, lambda *_: hup.set())}
    for sig in UNANSWERED_SIGNALS:
        previous[sig] = signal.signal(sig, lambda signum, _: unanswered.append(signum))
    checker = threading.Thread(target=check_when_asked, name="reload", daemon=True)
    checker.start()
    try:
        yield reload
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.set()  # the checker ends (a run that ended by itself)
        checker.join(5)


def start_again_in_place() -> None:
    """Replace this process with a new run of the same command (same pid, so systemd's main
    process stays; the environment, NOTIFY_SOCKET and the watchdog's included)."""
    logging.shutdown()  # the log lines so far reach the journal first
    argv = [sys.executable, *sys.orig_argv[1:]]
    try:
        os.execv(sys.executable, argv)
    except OSError as err:
        raise click.ClickException(f"SIGHUP: cannot start again in place ({err}): restart the service") from None


@main.command("check-config")
@click.argument("config_path", metavar="PATH", type=click.Path(path_type=str))  # a folder: exit 78, as serve
@SET_OPTION
@service_errors
def check_config(config_path: str, overrides: tuple[str, ...]) -> None:
    """Check a service config (every key, the bundle, the label set and its embeddings) and print
    what the service will say of its labels at start (new and weakly named ones) and the effective
    config: every key with the value in force. Exit status 78 when something is wrong."""
    from edge.service.serve import (
        checked,
        clip_notes,
        device_notes,
        disk_notes,
        exposure_notes,
        label_notes,
        path_notes,
    )

    config, found = checked(config_path, overrides)
    notes = path_notes(config) + device_notes(config) + disk_notes(config) + clip_notes(config, found)
    notes += exposure_notes(config) + label_notes(config, found)
    click.echo(
        f"# {config_path}: OK; bundle {found.bundle.path} ({found.bundle.meta.model_id}); label set "
        f"{found.label_set.name}: {plural(len(found.label_set.labels), 'label')}; outputs: "
        f"{', '.join(config.enabled_outputs()) or 'none'}"
    )
    for level, message in notes:
        click.echo(f"# {level}: {message}")
    click.echo(config.to_yaml(), nl=False)


@main.command("install-service")
@click.option(
    "--unit",
    "unit_path",
    default=UNIT_PATH,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="Where the unit file goes.",
)
@click.option(
    "--config",
    "config_path",
    default=CONFIG_PATH,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="The service config the unit runs with; the commented example is written there unless it exists.",
)
@click.option(
    "--exec",
    "exec_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=str),
    help="The semanticac-edge executable of ExecStart. Default: the one beside this Python (its venv's bin/).",
)
@click.option(
    "--watchdog-sec",
    type=click.IntRange(1),
    default=WATCHDOG_SEC,
    show_default=True,
    help="WatchdogSec=: systemd restarts the service when its loop has not turned for this long.",
)
@click.option("--print", "print_only", is_flag=True, help="Print the unit and the config instead of writing them.")
@click.option("--force", is_flag=True, help="Overwrite an existing config too (the unit is always rewritten).")
@service_errors
def install_service(
    unit_path: str, config_path: str, exec_path: str | None, watchdog_sec: int, print_only: bool, force: bool
) -> None:
    """Write the systemd unit for `serve` (and, unless one exists, the config), or --print them."""
    from edge.service.config import example_text
    from edge.service.unit import UnitSettings, default_exec, install_service, render_unit

    executable = exec_path or default_exec()
    if executable is None:
        raise click.UsageError("no semanticac-edge executable found beside this Python or on PATH: pass --exec")
    settings = UnitSettings(
        exec_path=os.path.abspath(executable), config_path=os.path.abspath(config_path), watchdog_sec=watchdog_sec
    )
    if print_only:
        if not os.path.isfile(settings.exec_path):  # a unit for another machine may name its path: said, not refused
            click.echo(
                f"warning: ExecStart {settings.exec_path} does not exist here: the unit fails to start where it does "
                "not either; pass --exec with the semanticac-edge of the venv that has the package",
                err=True,
            )
        click.echo(
            f"# ---- {unit_path}\n{render_unit(settings)}\n# ---- {settings.config_path}\n{example_text()}", nl=False
        )
        return
    done = install_service(settings, unit_path, force=force)
    click.echo(f"wrote {done.unit_path}")
    if done.config_written:
        check = f"semanticac-edge check-config {shlex.quote(str(done.config_path))}"
        click.echo(f"wrote {done.config_path}: edit it, then `{check}`")
        if done.backup is not None:
            click.echo(f"kept the config it replaced as {done.backup}")
    else:
        click.echo(f"kept {done.config_path} (it exists; --force overwrites it with the example)")
    click.echo("next: systemctl daemon-reload && systemctl enable --now semanticac-edge")


@main.command()
@click.option(
    "--url",
    default=None,
    metavar="URL|HOST:PORT|PORT",
    help="The service's metrics address (metrics.host:metrics.port). Default: http://127.0.0.1:9464.",
)
@click.option(
    "--top-k",
    "top_k",
    type=click.IntRange(1),
    default=None,
    help="Labels shown per window (default: all sent; a terminal shows up to 10).",
)
@click.option("--once", is_flag=True, help="Show the next window and exit.")
@domain_errors
def tail(url: str | None, top_k: int | None, once: bool) -> None:
    """What a running `serve` hears: live top-k with each label's threshold, level, events and
    status lines, read from its /stream (no second model)."""
    from edge.service.tail import DEFAULT_URL
    from edge.service.tail import tail as tail_stream

    with stop_on_signals() as stop:
        try:
            tail_stream(url or DEFAULT_URL, sys.stdout, top_k=top_k, stop=stop, once=once)
        except OutputError as err:
            discard_stdout()
            if err.broken_pipe:
                raise SystemExit(0) from None
            raise click.ClickException(str(err)) from None
