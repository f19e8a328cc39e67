"""`semanticac-train`: training, evaluation and export on a desktop GPU (or a CPU recipe)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from edge import __version__
from edge.cli import setup_logging
from edge.features import WindowGain

try:  # Ctrl-C in the second torch takes to load had been a 20-frame traceback through these imports
    try:  # before the modules that need it: on a device install its absence was a traceback through them
        import torch  # noqa: F401
    except ImportError as err:  # not installed, or installed and unable to load (a CUDA library missing)
        raise SystemExit(
            f"semanticac-train needs the training stack, and torch cannot be imported here ({err}): "
            'pip install "semanticac-edge[train]" on a desktop; a device needs only semanticac-edge '
            "(`semanticac-edge embed-labels` embeds label sets without it)"
        ) from None

    from train.recipe import UNDERLAY_KINDS
    from train.vocabulary_head import HEAD
    from train.vocabulary_trust import CEILING
except KeyboardInterrupt:
    import sys

    print("semanticac-train: stopped (Ctrl-C) while starting: nothing was done", file=sys.stderr)
    raise SystemExit(130) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semanticac-train")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Train, evaluate and export SemanticAC models (PyTorch)."""
    setup_logging(verbose)


def domain_errors(func):
    """Expected failures (bad files, bad configs) become one-line errors, not tracebacks."""
    import functools

    from edge.errors import SemanticACError
    from train.checkpoint import CheckpointError
    from train.config import ConfigError
    from train.model.weights import CheckpointMismatchError

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (SemanticACError, ConfigError, CheckpointError, CheckpointMismatchError, FileNotFoundError,
                ImportError) as err:
            raise click.ClickException(str(err)) from None

    return wrapper



@main.command()
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="A checkpoint written by `fit`.")
@click.option("--random-init", is_flag=True,
              help="Export freshly initialised weights of --config (for speed benchmarks only).")
@click.option("--config", "config_path", help="Model config (with --random-init): a path or paper|small.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--labels", "label_specs", multiple=True,
              help="Label sets to embed into the bundle (repeat the option); with a vocabulary branch, "
                   "less the classes the recipe held out (named <set>-seen): the labels recorded as trained. "
                   "Default: urban and esc50 where they name every class the checkpoint trained, else a set of "
                   "its classes, written into the bundle as labels/trained.yaml.")
@click.option("--clip-seconds", type=float, default=None,
              help="Clip length the model was trained on. Default: the checkpoint's, else 10.")
@click.option("--license", "license_text", default=None, help="Licence recorded in model.json.")
@click.option("--compact", is_flag=True,
              help="Smaller graphs: FP16 audio weights, int8 text weights (each checked against torch).")
@click.option("--vocabulary-shared", type=click.IntRange(1, 14), default=None,
              help="YAMNet students: add the vocabulary branch (YAMNet's own layers and AudioSet head) on the first N "
                   "trunk layers. Default: the recipe's freeze_audio_layers, if any.")
@click.option("--vocabulary-max-drift", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="How far (relative) a shared layer may have moved from YAMNet's weights in fine-tuning.")
@click.option("--vocabulary-tail", type=click.IntRange(0), default=0, show_default=True,
              help="The branch's last N layers are the student's own (one copy of their weights), each within the "
                   "max drift of YAMNet's.")
@click.option("--validation-run", "validation_runs", multiple=True, type=click.Path(file_okay=False),
              help="A run of the same recipe with clips held out (repeat): its last epoch's validation "
                   "figures go into model.json, with their mean (a run of another recipe beyond its data split, or "
                   "one stopped before its last epoch, is refused).")
@click.option("--replace", is_flag=True,
              help="--out is a bundle that holds files no export makes (a site's label set, notes): delete them "
                   "with the bundle it replaces.")
@domain_errors
def export(checkpoint, random_init, config_path, out, label_specs, clip_seconds, license_text, compact,
           vocabulary_shared, vocabulary_max_drift, vocabulary_tail, validation_runs, replace):
    """Export a model into a bundle: model.onnx, text.onnx, tokenizer, labels, model.json."""
    from edge.labels.labelset import resolve_label_set
    from train.checkpoint import model_from_checkpoint, model_id
    from train.cv import validation_figures
    from train.export import check_export_target, default_label_sets, export_bundle
    from train.model.config import load_model_config
    from train.model.semanticac import build_model

    if bool(checkpoint) == bool(random_init):
        raise click.UsageError("give either --checkpoint C or --random-init --config M")
    try:
        replaced = check_export_target(out, replace)  # before the model is loaded: never a folder of other files
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    if random_init:
        if not config_path:
            raise click.UsageError("--random-init needs --config (a model config: paper, small or a path)")
        config = load_model_config(config_path)
        model, state = build_model(config).eval(), {}
        training = {"command": "random initialisation (speed benchmarks only: not a trained model)"}
    else:
        model, config, state = model_from_checkpoint(checkpoint)
        training = state.get("training", {})
        if state.get("class_names"):  # what edge says a set's other labels are: never trained by this model
            training = {**training, "class_names": list(state["class_names"])}
    if not model.text_assisted:
        raise click.UsageError("this is the one-hot baseline: it has no text tower, so it cannot be a bundle")
    if validation_runs:
        training = {**training, "validation": validation_figures(validation_runs, training.get("recipe"))}
    if label_specs:
        label_sets, label_files = [resolve_label_set(spec) for spec in label_specs], {}
    else:
        label_sets, label_files = default_label_sets(training)
    mid = model_id(model, config)
    seconds = clip_seconds or state.get("clip_seconds") or 10.0
    shared = vocabulary_shared or (training.get("recipe") or {}).get("freeze_audio_layers")
    vocabulary = None if shared is None else {"shared": shared, "max_drift": vocabulary_max_drift,
                                              "tail": vocabulary_tail}
    reports = export_bundle(model, config, out, model_id=mid, clip_seconds=seconds, label_sets=label_sets,
                            training=training, license=license_text or state.get("license", "unspecified"),
                            compact=compact, scoring=state.get("scoring"), vocabulary=vocabulary,
                            label_files=label_files, replace=replace)
    click.echo(f"bundle {out}: model_id {mid}" + (f" (it replaced the bundle of model_id {replaced})" if replaced else ""))
    for name in label_files:
        yaml_path = Path(out) / "labels" / f"{name}.yaml"
        click.echo(f"  label set of the trained classes: listen with --bundle {out} --labels {yaml_path}")
    for report in reports:
        click.echo(f"  {report.summary()}")


@main.command("split-vocabulary")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="A bundle whose model.onnx still holds the vocabulary branch (model.json vocabulary.output).")
@click.option("--shared", type=click.IntRange(1, 13), required=True,
              help="How many trunk layers the branch shares with the student (its export's --vocabulary-shared).")
@domain_errors
def split_vocabulary(bundle_path, shared):
    """Move an older bundle's vocabulary branch out of model.onnx into vocabulary.onnx, in place.

    model.onnx keeps the student (embeddings checked unchanged) and outputs the map after its
    first --shared layers; vocabulary.onnx is YAMNet's own layers after them and its AudioSet
    head, as `export` makes it now. Same model_id and label embeddings: the device then runs the
    branch only for label sets with labels no one trained. TensorRT engines built for the old
    model.onnx are dropped: build them again with `semanticac-edge build-engine`.
    """
    from train.export import split_bundle

    folder, change = split_bundle(bundle_path, shared)
    click.echo(f"bundle {folder}: vocabulary branch split into vocabulary.onnx "
               f"(its scores moved by up to {change:.4f})")


@main.command("exact-text")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="A bundle exported with --compact before 2026-12-06 (int8 text weights as int8).")
@domain_errors
def exact_text(bundle_path):
    """Make a bundle's int8 text graph compute the same embeddings on every CPU, in place.

    Its int8 weights are stored as uint8 with zero point 128 (the same integers), as `export
    --compact` now writes them: ONNX Runtime saturates uint8 x int8 products on x86 CPUs with AVX2
    but no VNNI, which moved label embeddings by up to 0.04 in cosine there. model_id and the
    bundle's label embeddings stay; sets a device cached with the old graph are computed again at
    its next start (a cached set records the text graph that made it).
    """
    from train.export import exact_text_bundle

    rewritten, least = exact_text_bundle(bundle_path)
    where = "this CPU computed the old graph exactly" if least > 0.9999 else "this CPU saturated the old graph"
    click.echo(f"bundle {bundle_path}: {rewritten} int8 text weights stored as uint8; the bundle's prompts on this "
               f"CPU, old vs new graph: least cosine {least:.4f} ({where})")


@main.command("vocabulary-patches")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="A bundle with a vocabulary graph (model.json vocabulary.graph).")
@click.option("--config", "recipe", default=None,
              help="The recipe the bundle was trained with: measure the veto's trust on its training clips "
                   "right after (as `vocabulary-trust`). Without it the veto waits for that command.")
@click.option("--veto-power", type=click.FloatRange(0), default=None,
              help="With --config: the veto's power (0: off). Default: off.")
@domain_errors
def vocabulary_patches(bundle_path, recipe, veto_power):
    """Make a bundle's vocabulary graph YAMNet itself on the window's 0.96 s patches, in place.

    The graph reads the audio graph's input (the log-mel window), cuts it into YAMNet's examples
    (0.96 s every 0.48 s) and scores each with all of YAMNet's layers and its AudioSet head, as it
    was trained: a new label is named far more often than by layers shared with the fine-tuned
    student (README: the figures), at 2.4-3.5 times the audio graph's cost, paid only by label sets
    with a new label. model.onnx, model_id, engines and label embeddings stay.
    """
    from train.export import patch_vocabulary

    folder = patch_vocabulary(bundle_path)
    click.echo(f"bundle {folder}: vocabulary.onnx is now YAMNet on 0.96 s patches of the window")
    if not recipe:
        click.echo(f"the veto is off until `semanticac-train vocabulary-trust --bundle {folder} --config RECIPE "
                   "--veto-power A` measures where the new graph can be trusted")
    else:
        from edge.bundle import read_bundle
        from train.recipe import load_train_config
        from train.vocabulary_trust import trust_vocabulary

        heard, _ = trust_vocabulary(folder, load_train_config(recipe).datasets, None,
                                    0.0 if veto_power is None else veto_power)
        reliable = read_bundle(folder).meta.vocabulary["veto_reliable"]
        click.echo(f"trained labels the vocabulary hears in at least {reliable:.0%} of their training clips: "
                   + "; ".join(f"{name} {sum(share >= reliable for share in shares.values())} of {len(shares)}"
                               for name, shares in heard.items()))


@main.command("vocabulary-trust")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="A bundle with a vocabulary branch (model.json vocabulary).")
@click.option("--config", "recipe", required=True,
              help="The recipe the bundle was trained with: its training clips are heard again.")
@click.option("--veto-reliable", type=click.FloatRange(0, 1), default=None,
              help="The share of a trained label's clips the vocabulary must hear for the veto to apply to it. "
                   "Default: 0.3.")
@click.option("--veto-power", type=click.FloatRange(0), default=None,
              help="Set the veto's power too (0: off). Default: keep the bundle's.")
@click.option("--ceiling-quantile", type=click.FloatRange(0, 1, min_open=True), default=CEILING["quantile"],
              show_default=True, help="The quantile of each vocabulary class's scores on the training clips that a "
                                      "new label is scored against (with --ceiling-floor below 1).")
@click.option("--ceiling-floor", type=click.FloatRange(0, 1, min_open=True), default=CEILING["floor"],
              show_default=True, help="The lowest ceiling: a new label counts at most 1/floor times its score. "
                                      "1: no ceiling. 0.1 helps a vocabulary that shares the student's layers "
                                      "(README: the figures).")
@domain_errors
def vocabulary_trust(bundle_path, recipe, veto_reliable, veto_power, ceiling_quantile, ceiling_floor):
    """Record, in place, what a bundle's vocabulary does on the audio the student was trained on
    (one pass over the recipe's training clips, as the device computes it):

    \b
    - where it can veto: the share of each trained label's own training clips whose vocabulary score
      reaches veto_below (model.json vocabulary.heard). The veto (edge.vocabulary) holds a trained
      label back, beside a new label that is heard, where the vocabulary does not hear it; only
      labels whose share is at least --veto-reliable: its silence about a sound it never hears
      means nothing;
    - with --ceiling-floor below 1, its ceiling (model.json vocabulary.ceiling): what each
      vocabulary class scored on those clips, which a new label's score is measured against.
    """
    from train.recipe import load_train_config
    from train.vocabulary_trust import ceiling_summary, trust_vocabulary

    heard, ceiling = trust_vocabulary(bundle_path, load_train_config(recipe).datasets, veto_reliable, veto_power,
                                      ceiling_quantile, ceiling_floor)
    for set_name, shares in heard.items():
        click.echo(f"{set_name}: " + ", ".join(f"{label} {share:.2f}" for label, share in
                                               sorted(shares.items(), key=lambda item: item[1])))
    if ceiling is not None:
        click.echo(f"ceiling over {ceiling['clips']} clips: {ceiling_summary(ceiling)}")


def _ordered_db(value):
    """--under-db LOW HIGH as a pair, LOW no higher than HIGH; None when not given."""
    if not value:
        return None
    if value[0] > value[1]:
        raise click.BadParameter(f"{value[0]:g} {value[1]:g}: LOW must not be above HIGH (e.g. 15 35)")
    return tuple(value)


@main.command("vocabulary-head")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="A bundle whose vocabulary graph outputs features (made by `vocabulary-patches`).")
@click.option("--config", "recipe", required=True,
              help="The recipe the bundle was trained with: the head is fitted on its training and background clips.")
@click.option("--weight", type=click.FloatRange(0, 1), default=HEAD["weight"], show_default=True,
              help="The head's share of a trained label's logit (0: the student alone).")
@click.option("--agree", type=click.FloatRange(0, 1), default=HEAD["agree"], show_default=True,
              help="A window counts towards a trained label's event only where the student alone scores it at "
                   "least this (0: always); its scores and top-1 are the mix's either way.")
@click.option("--l2", type=click.FloatRange(0), default=HEAD["l2"], show_default=True,
              help="L2 penalty on the standardised features' weights.")
@click.option("--copies", type=click.IntRange(0), default=HEAD["copies"], show_default=True,
              help="Augmented copies of each training clip (shift, gain, noise).")
@click.option("--placed", type=click.IntRange(0), default=HEAD["placed"], show_default=True,
              help="Copies of each clip placed in a window of silence, quiet noise or background, as a "
                   "stream has a sound shorter than the window.")
@click.option("--hidden", type=click.IntRange(0), default=HEAD["hidden"], show_default=True,
              help="Units of the head's hidden ReLU layer (int8 weights); 0: one logistic regression per label "
                   "(--l2 applies to that alone).")
@click.option("--under", type=click.IntRange(0), default=None,
              help=f"Copies of each clip with one of the recipe's background clips laid under it, the label kept "
                   f"(a dog barks while people talk). Default: {HEAD['under']} where the recipe lays background "
                   f"under its clips (background.underlay) or --under-kinds / --under-db are given, else 0.")
@click.option("--under-kinds", multiple=True, type=click.Choice(UNDERLAY_KINDS),
              help="The background kinds laid under those copies (repeat it). Default: the recipe's "
                   "background.underlay kinds, else all of them.")
@click.option("--under-db", nargs=2, type=click.FloatRange(0), default=None, metavar="LOW HIGH",
              callback=lambda ctx, param, value: _ordered_db(value),
              help="How far under: the background's RMS drawn LOW..HIGH dB under the clip's loudest 50 ms. "
                   "Default: the recipe's background.underlay below_db, else 8 30.")
@click.option("--over", type=click.IntRange(0), default=None,
              help=f"Copies of each clip with another training clip of another class laid over it, both labels "
                   f"positive (a siren over a barking dog), at the recipe's overlay below_db. Default: "
                   f"{HEAD['over']} where the recipe lays clips over its clips (overlay), else 0.")
@domain_errors
def vocabulary_head(bundle_path, recipe, weight, agree, l2, copies, placed, hidden, under, under_kinds, under_db,
                    over):
    """Fit, in place, a head on the vocabulary graph's frozen YAMNet features for the trained labels.

    One hidden ReLU layer, then a logistic output per trained label (or, --hidden 0, one logistic
    regression per label), on the recipe's training clips and its background clips (speech,
    silence, noise: negatives), as the device computes the features. On the device
    each trained label's logit becomes (1 - weight) * the student's + weight * the head's: the two
    err on different clips (README: the figures), and an event needs the student's agreement
    (--agree). Every label set then runs the vocabulary graph
    (the student's cost plus the graph's: `semanticac-edge bench`).
    """
    from train.recipe import load_train_config
    from train.vocabulary_head import fit_head

    head = fit_head(bundle_path, load_train_config(recipe), weight, l2, copies, placed, hidden, agree,
                    under, under_kinds, under_db, over)
    click.echo(f"bundle {bundle_path}: {head['file']} fitted on {head['clips']} clips "
               f"({head['fit']['background']} background, +{copies} augmented copies, {placed} placed in a "
               f"window, {head['fit'].get('under', 0)} with background under them"
               + (f" ({', '.join(head['fit']['kinds'])} {head['fit']['below_db'][0]:g}-{head['fit']['below_db'][1]:g} "
                  f"dB under)" if head['fit'].get('under') else "")
               + f" and {head['fit'].get('over', 0)} with another clip over them each), "
               f"{f'{hidden} hidden units' if hidden else 'linear'}, weight {weight:g}, "
               f"events need the student at {agree:g}: "
               + "; ".join(f"{name} {fit['clips']} clips, training accuracy {fit['train_accuracy']:.1%}, "
                           f"other clips it scores above 0.5 {fit['train_false_positives']:.1%}"
                           for name, fit in head["fit"]["sets"].items()))


@main.command("window-gain")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="The bundle whose model.json gets (or loses) the gain.")
@click.option("--ref-dbfs", type=float, default=WindowGain.ref_dbfs, show_default=True,
              help="The level (dBFS RMS) each window's loudest span is brought to.")
@click.option("--max-boost-db", type=float, default=WindowGain.max_boost_db, show_default=True,
              help="The most a quiet window is raised.")
@click.option("--max-cut-db", type=float, default=WindowGain.max_cut_db, show_default=True,
              help="The most a loud window is lowered.")
@click.option("--max-level-dbfs", type=float, default=WindowGain.max_level_dbfs, show_default=True,
              help="A raise never lifts a window's mean level above this (steady quiet noise stays quiet); "
                   "0: no bound.")
@click.option("--off", is_flag=True, help="Remove the gain: windows are fed at the stream's own level.")
@domain_errors
def window_gain(bundle_path, ref_dbfs, max_boost_db, max_cut_db, max_level_dbfs, off):
    """Set, in place, the automatic gain `listen` gives each window (model.json `gain`).

    Each window's log-mel is scaled as if its audio were, so that its loudest 5 hops (50 ms at
    a 10 ms hop) sit at --ref-dbfs: a model trained on clips at studio levels hears a distant or
    quietly recorded sound at the levels it learnt (README: the figures). Digital silence stays silence, and
    `listen --min-level` still gates on the stream's own level. Label sets' thresholds were
    fitted with the gain the bundle had: fit them again after a change.
    """
    import dataclasses

    from edge.bundle import read_bundle, write_bundle_meta

    bundle = read_bundle(bundle_path)
    try:
        gain = None if off else WindowGain(ref_dbfs=ref_dbfs, max_boost_db=max_boost_db, max_cut_db=max_cut_db,
                                           max_level_dbfs=None if max_level_dbfs in (None, 0) else max_level_dbfs)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    write_bundle_meta(bundle.path, dataclasses.replace(bundle.meta, gain=gain))
    click.echo(f"bundle {bundle_path}: " + ("no window gain" if gain is None else gain.describe()))


@main.command("check-weights")
@click.option("--audio", "audio_file", type=click.Path(exists=True, dir_okay=False),
              help="An HTS-AT AudioSet checkpoint (or LAION-CLAP's) to check against the audio tower.")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False),
              help="OpenAI's CLIP RN50 file to check against the CLIP text tower.")
@click.option("--config", "config_path", default="paper", show_default=True, help="Model config.")
@domain_errors
def check_weights(audio_file, text_file, config_path):
    """Load official weights into the model and report matched, missing and unexpected keys.

    Exits non-zero when a key is missing or unexpected, or a shape does not fit.
    """
    from train.model.clip_weights import load_clip_text_checkpoint
    from train.model.config import load_model_config
    from train.model.htsat import build_htsat
    from train.model.semanticac import build_text_tower
    from train.model.weights import load_htsat_checkpoint

    if not audio_file and not text_file:
        raise click.UsageError("give --audio FILE and/or --text FILE")
    config = load_model_config(config_path)
    reports = []
    if audio_file:
        if config.audio.get("kind", "htsat") != "htsat":
            raise click.UsageError(f"--audio checks HTS-AT weights, but {config_path} uses a "
                                   f"{config.audio['kind']} audio tower: pass --config paper")
        reports.append(load_htsat_checkpoint(build_htsat(config.audio_config), audio_file, strict=False))
    if text_file:
        if config.text["kind"] != "clip":
            raise click.UsageError(f"--text checks CLIP weights, but {config_path} uses a {config.text['kind']} "
                                   "text tower: pass --config paper")
        reports.append(load_clip_text_checkpoint(build_text_tower(config.text, config.embed_dim), text_file, strict=False))
    for report in reports:
        click.echo(report.summary())
    if not all(report.ok for report in reports):
        raise click.ClickException("the weights do not match the model (see the missing/unexpected keys above)")


@main.command()
@click.option("--config", "config_path", required=True, help="Training recipe: a path or a shipped name.")
@click.option("--fold", type=int, default=None, help="Validate on this official fold, train on the others.")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Run folder (default runs/<recipe>, runs/<recipe>-fold<K> with --fold).")
@click.option("--resume", is_flag=True, help="Continue from <out>/last.pt exactly where it stopped.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override the recipe's epochs.")
@click.option("--pretrained-audio", type=click.Path(exists=True, dir_okay=False), default=None,
              help="HTS-AT AudioSet checkpoint (HTSAT_AudioSet_Saved_*.ckpt) for the audio tower.")
@click.option("--pretrained-text", type=click.Path(exists=True, dir_okay=False), default=None,
              help="OpenAI CLIP RN50.pt for the CLIP text tower.")
@domain_errors
def fit(config_path, fold, out, resume, epochs, pretrained_audio, pretrained_text):
    """Train a recipe; checkpoints every epoch (last.pt) and the best by validation (best.pt; by
    training accuracy for a recipe without a validation split: test folds are reported, never
    used to choose). A folder holding a run needs --resume."""
    import shlex
    import sys

    from train.loop import distributed, is_main
    from train.loop import fit as run_fit
    from train.recipe import load_train_config

    config = load_train_config(config_path, fold=fold, epochs=epochs)
    out = out or str(Path("runs") / (Path(config_path).stem + (f"-fold{fold}" if fold is not None else "")))
    command = "semanticac-train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with distributed(), stopped_by_signals(out):
        result = run_fit(config, out, resume=resume, pretrained_audio=pretrained_audio,
                         pretrained_text=pretrained_text, command=command)
        if is_main():
            last = result["history"][-1] if result["history"] else {}
            agree = "" if result["ranks_agree"] is None else "; all processes agree on the weights"
            figures = "".join(f", {name} {last[key]:.4f}" for key, name in (
                ("loss", "loss"), ("train_accuracy", "train accuracy"), ("val_accuracy", "val accuracy"),
                ("test_accuracy", "held-out test accuracy")) if key in last)
            trained = [f"{split} {last[f'trained_{split}_accuracy']:.4f}" for split in ("val", "test")
                       if f"trained_{split}_accuracy" in last]
            if trained:  # optim.ema: the figures above are the average's, which the checkpoints hold
                figures += f" (the weights' moving average; the trained weights: {', '.join(trained)})"
            click.echo(f"{out}: {len(result['history'])} epochs; best.pt by {result['scored_on']} accuracy "
                       f"{result['best']:.4f}; last epoch{figures} (every figure: the history in last.pt){agree}")
            if result["skipped"]:  # one warning per clip scrolled by at the start
                click.echo(f"{out}: {result['skipped']} clip(s) of the data could not be read and were left out "
                           "(each was warned of as the data was read: `skipping a clip`)", err=True)


@contextlib.contextmanager
def stopped_by_signals(out: str):
    """SIGTERM (kill, docker stop, Slurm) stops a run as Ctrl-C does, so a checkpoint being written
    is cleaned up (atomic: last.pt stays whole), and either says how to go on."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    except KeyboardInterrupt:
        if not (Path(out) / "last.pt").is_file():
            raise click.ClickException(f"stopped before the first epoch ended: nothing was saved in {out}") from None
        raise click.ClickException(
            f"stopped: {out}/last.pt holds the last whole epoch; continue with the same command and --resume"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


@main.command()
@click.option("--config", "config_path", required=True, help="Training recipe.")
@click.option("--folds", default=None, help="Comma-separated folds (default: every fold of the data with 30+ clips).")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Folder for the runs and cv.json.")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override the recipe's epochs.")
@domain_errors
def cv(config_path, folds, out, epochs):
    """k-fold cross-validation: train on all folds but one, evaluate on it; mean +- std."""
    from train.cv import cross_validate

    try:
        chosen = [int(f) for f in folds.split(",")] if folds else None
    except ValueError:
        raise click.BadParameter(f"{folds!r}: give fold numbers separated by commas, e.g. 1,2,3",
                                 param_hint="--folds") from None
    summary, path = cross_validate(config_path, chosen, out, epochs, on_fold=lambda result: click.echo(
        f"fold {result['fold']}: validation accuracy {result['accuracy']:.4f} on {result['clips']} clips"))
    click.echo(f"{len(summary['folds'])}-fold accuracy {summary['mean']:.4f} +- {summary['std']:.4f} (the folds' "
               f"mean; over all their clips {summary['pooled']:.4f}) -> {path}")


@main.command()
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_path", required=True, help="Training recipe whose data split to score.")
@click.option("--fold", type=int, default=None, help="Score this official fold (default: the recipe's split).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for metrics.json and PNGs.")
@domain_errors
def evaluate(checkpoint, config_path, fold, out):
    """Accuracy, per-class accuracy and the confusion matrix of a checkpoint -> metrics.json + PNGs.

    A recipe with several datasets scores each against its own label set, into OUT/<kind>/.
    """
    from train.evaluation import evaluate_checkpoint

    for e in evaluate_checkpoint(checkpoint, config_path, out, fold):
        seen = f" ({e.trained_on} of them trained on: NOT held out)" if e.trained_on else ""
        click.echo(f"{e.dataset} {e.split}: accuracy {e.metrics.accuracy:.4f} on {e.metrics.count} clips{seen} -> "
                   f"{e.folder}/metrics.json, confusion.png, per_class.png")


@main.command("embed-labels")
@click.option("--bundle", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--labels", "label_specs", required=True, multiple=True, help="Label set (repeat for several).")
@click.option("--into", type=click.Choice(["auto", "bundle", "cache"]), default="auto", show_default=True,
              help="auto: the bundle's labels/ when it can be written, else the user cache.")
@domain_errors
def embed_labels(bundle, label_specs, into):
    """`semanticac-edge embed-labels` for a training machine (the same function; no torch needed for
    it): --bundle is required here, and ONNX Runtime picks its threads."""
    from edge.bundle import read_bundle
    from edge.labels.embeddings import embed_label_sets

    for written in embed_label_sets(read_bundle(bundle, verify=True), label_specs, into=into):
        click.echo(written.describe())
