"""Where the vocabulary branch can be trusted to veto: for each label the student was trained on,
the share of that label's own training clips whose vocabulary score reaches `veto_below`
(model.json vocabulary.heard; edge.vocabulary holds a trained label back only where this share is
at least `veto_reliable`).

The veto reads the vocabulary's silence about a trained label as doubt about the student's score,
in a window where a new label of the set is heard. That silence means something only for a sound
the vocabulary does hear: YAMNet's AudioSet head hears ESC-50's dogs and sirens, but barely hears
UrbanSound8K's jackhammers, or children playing (it hears speech). Measured as the device
computes it: the bundle's graphs in ONNX Runtime on the first window of each clip.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def measure_heard(bundle, datasets) -> dict[str, dict[str, float]]:
    """{trained set: {label: share}} over the training clips of `datasets` (train.data.DataSpec
    each); a clip counts for every trained label named as its class. Labels without clips are left
    out (edge then never vetoes them)."""
    from edge.errors import BundleError
    from edge.labels.embeddings import LabelEmbeddings
    from edge.vocabulary import Vocabulary
    from train.config import ConfigError
    from train.data.datasets import split_clips

    vocabulary = Vocabulary.from_bundle(bundle)
    if vocabulary is None:
        raise BundleError(f"bundle {bundle.path} has no vocabulary branch (model.json vocabulary): nothing to "
                          "trust; export one with `semanticac-train export --vocabulary-shared N`")
    sets = {name: LabelEmbeddings.load(bundle.labels_dir / f"{name}.npz") for name in bundle.meta.vocabulary["trained"]}
    paths = defaultdict(list)  # class name -> its training clips
    for spec in datasets:
        clips, class_names = split_clips(spec, "train")
        for clip in clips:
            paths[class_names[clip.target]].append(clip.path)
    wanted = {label for found in sets.values() for label in found.labels} & set(paths)
    if not wanted:
        raise ConfigError(f"no training clip of {spec_roots(datasets)} is of a label of the bundle's trained sets "
                          f"{sorted(sets)}: give the recipe the bundle was trained with")
    todo = [(name, path) for name in sorted(wanted) for path in paths[name]]
    _, scores = first_windows(bundle, [path for _, path in todo], "vocabulary on training clips")
    by_class = defaultdict(list)  # class -> vocabulary scores [V] of each of its clips
    for (name, _), row in zip(todo, scores):
        by_class[name].append(row)
    heard = {}
    for set_name, found in sets.items():
        label_scores = vocabulary.fusion(found.embeddings).label_scores
        heard[set_name] = {
            label: round(float((label_scores(np.array(by_class[label]))[:, k] >= vocabulary.veto_below).mean()), 4)
            for k, label in enumerate(found.labels) if label in wanted
        }
    return heard


def first_windows(bundle, paths, what: str = "clips") -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [N, C], vocabulary scores [N, V]) of each file's first window (tiled when
    shorter), as the device computes them: the bundle's graphs in ONNX Runtime; a progress bar."""
    from tqdm import tqdm

    from edge.backends import select_backend
    from edge.capture.audio import read_audio
    from edge.features import log_mel, tile_frames
    from edge.vocabulary import Vocabulary

    fe, seconds = bundle.meta.frontend, bundle.meta.clip_seconds
    vocabulary = Vocabulary.from_bundle(bundle)
    embeddings, scores = [], []
    with select_backend(bundle, "onnxruntime") as audio, select_backend(bundle, graph="vocabulary") as graph:
        for path in tqdm(paths, desc=what, unit="clip", dynamic_ncols=True):
            x = read_audio(str(path), fe.sample_rate)[: fe.seconds_to_samples(seconds)]
            out = audio.run({audio.input_names[0]: tile_frames(log_mel(x, fe), fe.frames)[None, None]})
            embeddings.append(out[audio.output_names[0]][0])
            scores.append(vocabulary.scores(graph, out)[0])
    return np.array(embeddings), np.array(scores)


def spec_roots(datasets) -> str:
    return ", ".join(str(spec.root) for spec in datasets)


def trust_vocabulary(path: str | Path, datasets, veto_reliable: float | None = None,
                     veto_power: float | None = None) -> dict[str, dict[str, float]]:
    """Measure `measure_heard` for the bundle at `path` and record it in its model.json (atomically),
    with `veto_reliable` (default: train.export's) and, when given, a new `veto_power`."""
    from edge.bundle import read_bundle, write_bundle_meta
    from train.export import VOCABULARY_FUSION

    bundle = read_bundle(path)
    heard = measure_heard(bundle, datasets)
    spec = {**bundle.meta.vocabulary, "heard": heard,
            "veto_reliable": VOCABULARY_FUSION["veto_reliable"] if veto_reliable is None else float(veto_reliable)}
    if veto_power is not None:
        spec["veto_power"] = float(veto_power)
    write_bundle_meta(bundle.path, dataclasses.replace(bundle.meta, vocabulary=spec))
    for set_name, shares in heard.items():
        untrusted = sorted(label for label, share in shares.items() if share < spec["veto_reliable"])
        log.info("vocabulary.heard %s: %d labels measured; below veto_reliable %.2f (never vetoed): %s",
                 set_name, len(shares), spec["veto_reliable"], ", ".join(untrusted) or "none")
    return heard


def trust_exported(path: str | Path, recipe: dict | None) -> dict[str, dict[str, float]] | None:
    """After `export`: measure where the new bundle's vocabulary can veto on the training clips of
    `recipe` (the checkpoint's). Where they cannot be read here, the veto is switched off (power 0:
    unmeasured, it would hold back sounds the vocabulary never hears) and the warning names the
    command that measures it later."""
    from edge.bundle import read_bundle, write_bundle_meta
    from train.config import from_dict
    from train.recipe import TrainConfig

    datasets = from_dict(TrainConfig, recipe).datasets if recipe else ()
    missing = [str(spec.root) for spec in datasets if not Path(spec.root).exists()]
    if datasets and not missing:
        return trust_vocabulary(path, datasets)
    bundle = read_bundle(path)
    write_bundle_meta(bundle.path, dataclasses.replace(bundle.meta, vocabulary={**bundle.meta.vocabulary,
                                                                                  "veto_power": 0.0}))
    log.warning("the training clips (%s) are not here: the veto is off until `semanticac-train vocabulary-trust "
                "--bundle %s --config RECIPE --veto-power A` measures which labels the vocabulary hears",
                ", ".join(missing) or "no recipe in the checkpoint", path)
    return None
