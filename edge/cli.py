"""`semanticac-edge`: the device's command line. A thin click shell over the library.

Results go to stdout, logs to stderr. Domain errors (edge.errors) become one-line messages
and a non-zero exit here, at the boundary; nothing below prints.
"""

from __future__ import annotations

import functools
import logging

import click

from edge import __version__
from edge.errors import SemanticACError

log = logging.getLogger(__name__)


def setup_logging(verbosity: int) -> None:
    """Logs on stderr, configured once: -v for info, -vv for debug."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def domain_errors(func):
    """Turn an edge error into click's one-line `Error: ...` and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SemanticACError as err:
            raise click.ClickException(str(err)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semanticac-edge")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Streaming sound-event classification on the edge (SemanticAC).

    Labels are free text in a YAML file; a new label is a YAML edit, not a retrain.
    """
    setup_logging(verbose)


BUNDLE_OPTION = click.option(
    "--bundle", type=click.Path(file_okay=False, path_type=str), default=None,
    help="Model bundle folder. Default: $SEMANTICAC_BUNDLE, else the demo bundle shipped with the package.")
LABELS_OPTION = click.option(
    "--labels", "labels_spec", default=None, metavar="NAME|PATH",
    help="A label-set YAML file, or the name of a shipped set (urban, esc50).")


@main.command()
@click.argument("spec", metavar="NAME|PATH")
@domain_errors
def labels(spec: str) -> None:
    """Check a label set and show what will be embedded."""
    from edge.labels import resolve_label_set

    label_set = resolve_label_set(spec)
    click.echo(f"label set {label_set.name!r} from {label_set.source}: {len(label_set.labels)} labels, "
               f"sha256 {label_set.sha256[:16]}")
    for label in label_set.labels:
        group = f"  [{label.group}]" if label.group else ""
        click.echo(f"  {label.name:<24} threshold {label.threshold:.2f}{group}")
        for prompt in label.prompts:
            click.echo(f"      {prompt!r}")


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
    click.echo(f"embedding  {meta.embedding_dim}-d, logit scale {meta.logit_scale:g}, "
               f"encoder {meta.text_encoder.get('kind', '?')}")
    click.echo(f"frontend   {fe.sample_rate} Hz, {fe.n_mels} mels {fe.f_min:g}-{fe.f_max:g} Hz, hop {fe.hop_length}, "
               f"{fe.frames} frames; trained on {meta.clip_seconds:g} s clips")
    click.echo(f"license    {meta.license}")
    if labels_spec:
        from edge.label_embeddings import find_label_embeddings
        from edge.labels import resolve_label_set

        label_set = resolve_label_set(labels_spec)
        emb = find_label_embeddings(found, label_set)
        click.echo(f"labels     {label_set.name}: {len(emb.labels)} labels embedded, ready")
