"""`semanticac-train`: training, evaluation and export on a desktop GPU (or a CPU recipe)."""

from __future__ import annotations

import click

from edge import __version__
from edge.cli import setup_logging


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
        except (SemanticACError, ConfigError, CheckpointError, CheckpointMismatchError, FileNotFoundError) as err:
            raise click.ClickException(str(err)) from None

    return wrapper


@main.command()
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="A checkpoint written by `fit`.")
@click.option("--random-init", is_flag=True,
              help="Export freshly initialised weights of --config (for speed benchmarks only).")
@click.option("--config", "config_path", help="Model config (with --random-init): a path or paper|small.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option("--labels", "label_specs", multiple=True, default=("urban", "esc50"), show_default=True,
              help="Label sets to embed into the bundle (repeat the option).")
@click.option("--clip-seconds", type=float, default=None,
              help="Clip length the model was trained on. Default: the checkpoint's, else 10.")
@click.option("--license", "license_text", default=None, help="Licence recorded in model.json.")
@domain_errors
def export(checkpoint, random_init, config_path, out, label_specs, clip_seconds, license_text):
    """Export a model into a bundle: model.onnx, text.onnx, tokenizer, labels, model.json."""
    from edge.labels import resolve_label_set
    from train.checkpoint import model_from_checkpoint, model_id
    from train.config import load_model_config
    from train.export import export_bundle
    from train.model.semanticac import build_model

    if bool(checkpoint) == bool(random_init):
        raise click.UsageError("give either --checkpoint C or --random-init --config M")
    if random_init:
        if not config_path:
            raise click.UsageError("--random-init needs --config (a model config: paper, small or a path)")
        config = load_model_config(config_path)
        model, state = build_model(config).eval(), {}
        training = {"command": "random initialisation (speed benchmarks only: not a trained model)"}
    else:
        model, config, state = model_from_checkpoint(checkpoint)
        training = state.get("training", {})
    if not model.text_assisted:
        raise click.UsageError("this is the one-hot baseline: it has no text tower, so it cannot be a bundle")
    label_sets = [resolve_label_set(spec) for spec in label_specs]
    mid = model_id(model, config)
    seconds = clip_seconds or state.get("clip_seconds") or 10.0
    reports = export_bundle(model, config, out, model_id=mid, clip_seconds=seconds, label_sets=label_sets,
                            training=training, license=license_text or state.get("license", "unspecified"))
    click.echo(f"bundle {out}: model_id {mid}")
    for report in reports:
        click.echo(f"  {report.summary()}")


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
    from train.config import load_model_config
    from train.model.clip_weights import load_clip_text_checkpoint
    from train.model.htsat import build_htsat
    from train.model.semanticac import build_text_tower
    from train.model.weights import load_htsat_checkpoint

    if not audio_file and not text_file:
        raise click.UsageError("give --audio FILE and/or --text FILE")
    config = load_model_config(config_path)
    reports = []
    if audio_file:
        reports.append(load_htsat_checkpoint(build_htsat(config.audio), audio_file, strict=False))
    if text_file:
        if config.text["kind"] != "clip":
            raise click.UsageError(f"--text checks CLIP weights, but {config_path} uses a {config.text['kind']} "
                                   "text tower: pass --config paper")
        reports.append(load_clip_text_checkpoint(build_text_tower(config.text, config.embed_dim), text_file, strict=False))
    for report in reports:
        click.echo(report.summary())
    if not all(report.ok for report in reports):
        raise click.ClickException("the weights do not match the model (see the missing/unexpected keys above)")
