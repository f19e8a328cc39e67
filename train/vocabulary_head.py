"""The vocabulary's head: a small network on frozen YAMNet features for the labels the student was
trained on, fitted on the student's own training clips and mixed with the student's logits on the
device (edge.vocabulary, model.json `vocabulary.head`, `head.npz`).

Why: YAMNet itself on the window's 0.96 s patches (the vocabulary graph `vocabulary-patches`
makes) also outputs its 1024-wide embedding, mean and max over the patches. A logistic head on
those frozen features names held-out clips about as well as the fine-tuned student (CV split 1,
ESC-50 20 % / UrbanSound8K fold 2: 87.5 / 68.7 % against the student's 83.2 / 69.1 %) and makes
other mistakes, so the mean of the two logits does better than either: 90.8 / 72.6 %
(benchmarks/vocabulary_head.py; README: the figures). Since 2026-12-03 the head has one hidden
layer (128 ReLU units, `fit_mlp`; `hidden=0` is the logistic head): alone 84.5 / 71.8 %, mixed
89.8 / 74.5 %. On features cached from the same split, three seeds gave 89.8-92.1 % (ESC-50, 304
clips) and 74.2-74.9 % (UrbanSound8K, 888 clips) mixed, so UrbanSound8K gains about 2 points and
ESC-50 moves within its seed noise; the L2 penalty of the logistic head (3e-4..1e-2), AudioSet's
521 scores as features beside the embedding, 64 or 256-512 units and ensembles of smaller ones
did no better. Its hidden weights are kept int8 per unit on the standardised features (the
bundle stays under 40 MB), which moved the mixed top-1 there by 0.4 points at most.

What is fitted, as the device computes it (the bundle's vocabulary graph in ONNX Runtime, each
clip's first window, tiled when shorter): one sigmoid (one-vs-rest) output per trained label (of
every trained set), after the hidden layer (AdamW, dropout: MLP) or as a logistic regression,
L2-regularised, over
- the recipe's training clips, each a positive for every trained label named as its class and a
  negative for all the others, as the student's own loss has it over its one label space (a
  head fitted per set, without the other set's clips as negatives, starts 85 false alarms per
  hour of held-out non-urban ESC-50 audio with `urban`: it never saw such sounds),
- the recipe's background clips that hold no class sound (speech, silence, noise, hum, room tone:
  a negative for every label; the synthesised streets are left out),
- `copies` augmented copies of each clip (a random circular shift, gain -20..0 dB, white noise at
  10-40 dB SNR half the time), which measured 2.5 points better on UrbanSound8K,
- `placed` copies of each clip as a stream puts it in a window (`placed_copy`): an augmented copy
  cut to 40-100 % of itself, at a random offset in 5 s of digital silence, of quiet white noise or
  of a background clip (hum, noise, room tone). Fitted on whole windows only, the head was deaf to
  a sound shorter than the window: the mean over the window's patches moves with the silence
  around it, towards the silence clips it learnt as negatives. Head alone, fitted on
  UrbanSound8K fold 1 and its background clips, on 300 fold-2 clips (30 per class) ending a
  window of digital silence: a logit above 0 for its own label on 28 % of them without placed
  copies (air conditioner, car horn, engine idling, jackhammer: 0 %), 81 % with 2; in -60 dBFS
  noise 69 -> 81 %, in room tone or hum 58 -> 73 %; tiled, as before, 80 -> 83 % (accuracy 86 %
  both). Max pooling alone, or the mean alone, did no better.
- with a recipe that lays background under its labelled clips (`background.underlay`,
  train.data.underlay), or where `vocabulary-head --under` asks for them, HEAD["under"] copies of
  each clip with one of the recipe's background clips (speech, noise, hum, room tone) laid under it
  as the student's training lays them (under_copy): a head that never heard a voice beside a sound
  takes the sound's score away when one talks.
The windows are those of the clips as they are, without the bundle's window gain (model.json
`gain`, which the device applies before the graph): the copies' random gain (-20..0 dB) then
teaches the head a range of levels, and the device's gain brings a window into it. Fitted on
windows with the gain (CV split 1, 4-epoch student, `benchmarks/window_gain.py --fit-gain`, the
device's gain on the held-out windows either way), the mix moved within its seed noise at the
clips' own level (ESC-50 90.8 -> 92.1 %, UrbanSound8K 73.1 -> 73.1 %), but UrbanSound8K's own label
reached its threshold less often on quiet clips: 60.0 -> 55.1 % 20 dB down, 58.9 -> 51.9 % 40 dB
down (the head alone: 55.1 -> 49.7 %, 52.5 -> 47.0 %).
Features are standardised for the fit and the scaling folded back into the (first layer's)
weights, for the hidden layer when the device loads it (edge.vocabulary.Head), so the device
computes features @ weights.T + bias, or relu(features @ hidden.T + hidden_bias) @ weights.T + bias.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HEAD_FILE = "head.npz"
# weight: the head's share of a trained label's logit, from cross-validation (README); l2 on the
# standardised features; copies: augmented copies of each training clip
# placed: copies of each clip placed in a window as a stream has it (placed_copy); under: copies with a
# background clip laid under them, when the recipe lays them under its clips or kinds or levels of them are
# given (under_copy, head_underlay); agree: a window
# counts towards a label's event only where the student alone scores it this much (edge.vocabulary)
# over: copies with another training clip of another class laid over them, both labels positive, when the recipe
# lays them over its clips (overlay, over_copy)
HEAD = {"weight": 0.5, "agree": 0.5, "l2": 1e-3, "copies": 2, "placed": 2, "hidden": 128, "under": 2, "over": 2}
# the hidden layer's fit (hidden > 0): AdamW on mini-batches, dropout on the input and on the hidden units;
# `epochs` passes over the clips, more when that is under `steps` batches (a small recipe)
MLP = {"epochs": 40, "steps": 2000, "batch": 256, "lr": 1e-3, "weight_decay": 1e-4, "input_dropout": 0.2,
       "dropout": 0.3, "seed": 0}
PLACED = {"keep": (0.4, 1.0), "noise_dbfs": (-75.0, -40.0), "gain_db": (-20.0, 0.0)}
CONTEXT_KINDS = ("hum", "pink", "brown", "white", "near_silence", "room_tone")  # background kinds a clip is placed in
ROUNDS = 8  # L-BFGS restarts at most


def augment_copy(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One augmented copy of a clip's samples: a random circular shift, gain -20..0 dB, and half
    the time white noise at 10-40 dB SNR."""
    x = np.roll(x, int(rng.integers(0, max(len(x), 1)))) * 10 ** (rng.uniform(-20, 0) / 20)
    if rng.random() < 0.5:
        power = float(np.mean(x ** 2)) + 1e-12
        x = x + rng.standard_normal(len(x)) * np.sqrt(power / 10 ** (rng.uniform(10, 40) / 10))
    return x.astype(np.float32)


def placed_copy(x: np.ndarray, samples: int, rng: np.random.Generator, contexts=()) -> np.ndarray:
    """[samples] one copy of a clip as a stream puts it in a window: an augmented copy
    (augment_copy), cut to a random 40-100 % of itself (at most the window), at a random offset in
    a window of digital silence, white noise at -75..-40 dBFS RMS or, with `contexts` (background
    clips' samples at the clip's rate), one of them at a gain of -20..0 dB (repeated to fill it)."""
    x = augment_copy(x, rng)[:samples]
    keep = max(1, int(len(x) * rng.uniform(*PLACED["keep"])))
    start = int(rng.integers(0, len(x) - keep + 1))
    x = x[start : start + keep]
    kind = int(rng.integers(3 if len(contexts) else 2))
    if kind == 0:
        window = np.zeros(samples, np.float32)
    elif kind == 1:
        window = rng.standard_normal(samples) * 10 ** (rng.uniform(*PLACED["noise_dbfs"]) / 20)
    else:
        context = contexts[int(rng.integers(len(contexts)))]
        window = np.resize(context, samples) * 10 ** (rng.uniform(*PLACED["gain_db"]) / 20)
    offset = int(rng.integers(0, samples - len(x) + 1))
    window[offset : offset + len(x)] += x
    return window.astype(np.float32)


def under_copy(x: np.ndarray, beds, below_db: tuple[float, float], rng: np.random.Generator,
               rate: int) -> np.ndarray:
    """One augmented copy of a clip (augment_copy) with one of `beds` (background clips' samples)
    laid under it as the recipe's training lays them (train.data.underlay.lay_under)."""
    from train.data.underlay import lay_under

    bed = beds[int(rng.integers(len(beds)))]
    return lay_under(augment_copy(x, rng), bed, float(rng.uniform(*below_db)), rng, rate)


def over_copy(x: np.ndarray, other: np.ndarray, below_db: tuple[float, float], rng: np.random.Generator,
              rate: int) -> np.ndarray:
    """One augmented copy of a clip (augment_copy) with another clip's samples laid over it as the
    recipe's training lays them (train.data.overlay.lay_over)."""
    from train.data.overlay import lay_over

    return lay_over(augment_copy(x, rng), other, float(rng.uniform(*below_db)), rng, rate)


def window_features(bundle, paths, copies: int = 0, seed: int = 0, what: str = "clips", placed: int = 0,
                    contexts=(), window_gain: bool = False, under: int = 0, beds=(),
                    below_db: tuple[float, float] = (8.0, 30.0), partners=(),
                    over_db: tuple[float, float] = (0.0, 10.0)) -> np.ndarray:
    """[N * (1 + copies + placed + under + over), F] the vocabulary graph's features (its head input)
    of each file's first window, as the device computes them, each file then its `copies` augmented
    copies, its `placed` copies in a window (placed_copy, in the files `contexts` among others, each
    read once), its `under` copies with one of the files `beds` laid `below_db` under it (under_copy)
    and, with `partners` (per file, the files laid over its copies, each read when used), one copy with
    each laid `over_db` under it (over_copy); with the bundle's window gain only when `window_gain` (a
    head is fitted without it: above); a progress bar."""
    from edge.backends import select_backend
    from edge.capture.audio import read_audio
    from train.progress import bar
    from train.vocabulary_trust import window_of

    if not window_gain:
        bundle = dataclasses.replace(bundle, meta=dataclasses.replace(bundle.meta, gain=None))
    fe = bundle.meta.frontend
    samples = fe.seconds_to_samples(bundle.meta.clip_seconds)
    name, features = bundle.meta.vocabulary["graph"].inputs[0], head_input(bundle)
    rng = np.random.default_rng(seed)
    surroundings = [read_audio(str(path), fe.sample_rate) for path in contexts] if placed else []
    laid = [read_audio(str(path), fe.sample_rate) for path in beds] if under else []
    rows = []
    with select_backend(bundle, graph="vocabulary") as graph:
        for i, path in enumerate(bar(paths, desc=what, unit="clip")):
            x = read_audio(str(path), fe.sample_rate)[:samples]
            clips = ([x] + [augment_copy(x, rng) for _ in range(copies)]
                     + [placed_copy(x, samples, rng, surroundings) for _ in range(placed)]
                     + [under_copy(x, laid, below_db, rng, fe.sample_rate) for _ in range(under)]
                     + [over_copy(x, read_audio(str(other), fe.sample_rate)[:samples], over_db, rng, fe.sample_rate)
                        for other in (partners[i] if partners else ())])
            mels = [window_of(clip, bundle) for clip in clips]
            rows.append(graph.run({name: np.stack(mels)[:, None]})[features])  # the clip and its copies: one batch
    return np.concatenate(rows).astype(np.float32)


def head_input(bundle) -> str:
    """The vocabulary graph's features output; BundleError with the fix when it has none."""
    from edge.errors import BundleError

    spec = bundle.meta.vocabulary
    if spec is None or len(spec["graph"].outputs) < 2:
        raise BundleError(f"bundle {bundle.path}: its vocabulary graph outputs no features for a head: make it "
                          f"YAMNet on the window's patches first, `semanticac-train vocabulary-patches --bundle "
                          f"{bundle.path}`")
    return spec["graph"].outputs[1]


def _standardised(features: np.ndarray, targets: np.ndarray):
    """(x, y) as float32 tensors, x the features standardised per column, and that column's
    (mean, scale), which the fitted weights fold back in."""
    import torch

    mean, scale = features.mean(0), features.std(0) + 1e-6
    x = torch.from_numpy(((features - mean) / scale).astype(np.float32))
    return x, torch.from_numpy(targets.astype(np.float32)), mean, scale


def _output_layer(inputs: int, labels: int):
    """The per-label logistic outputs, their bias started where most clips are negatives for most labels."""
    import torch

    layer = torch.nn.Linear(inputs, labels)
    with torch.no_grad():
        layer.bias.fill_(-4.0)
    return layer


def fit_logistic(features: np.ndarray, targets: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray]:
    """One logistic regression per column of `targets` [N, K] (1: the clip is of that label, 0:
    it is not): features [N, F] -> (weights [K, F], bias [K]) on the raw features. Mean BCE +
    l2 * |W|^2 on standardised features, by L-BFGS."""
    import torch

    x, y, mean, scale = _standardised(features, targets)
    layer = _output_layer(x.shape[1], y.shape[1])
    optimiser = torch.optim.LBFGS(layer.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(layer(x), y, reduction="sum") / len(y)
        loss = loss + l2 * (layer.weight ** 2).sum()
        loss.backward()
        return loss

    # L-BFGS may stop early (a line search that finds no decrease, on nearly separable data):
    # restart it, with a fresh history, until a round no longer lowers the loss
    best = float("inf")
    for _ in range(ROUNDS):
        loss = float(optimiser.step(closure).detach())
        optimiser = torch.optim.LBFGS(layer.parameters(), max_iter=500, line_search_fn="strong_wolfe")
        if loss > best - 1e-6:
            break
        best = loss
    log.info("head fit: loss %.5f after L-BFGS", float(closure().detach()))
    weights = layer.weight.detach().numpy() / scale
    return weights.astype(np.float32), (layer.bias.detach().numpy() - weights @ mean).astype(np.float32)


def fit_mlp(features: np.ndarray, targets: np.ndarray, hidden: int) -> dict[str, np.ndarray]:
    """One hidden ReLU layer of `hidden` units, then one logistic output per column of `targets`
    [N, K], on standardised features (MLP: AdamW, dropout): head.npz's arrays (edge.vocabulary.Head),
    the hidden weights int8 with a step per unit on the standardised features (a quarter of
    float32's bytes, for 0.4 points of the CV split's top-1 at most), the output layer float16."""
    import torch

    torch.manual_seed(MLP["seed"])
    x, y, mean, scale = _standardised(features, targets)
    net = torch.nn.Sequential(torch.nn.Dropout(MLP["input_dropout"]), torch.nn.Linear(x.shape[1], hidden),
                              torch.nn.ReLU(), torch.nn.Dropout(MLP["dropout"]), _output_layer(hidden, y.shape[1]))
    optimiser = torch.optim.AdamW(net.parameters(), lr=MLP["lr"], weight_decay=MLP["weight_decay"])
    batches = -(-len(x) // MLP["batch"])
    for _ in range(max(MLP["epochs"], -(-MLP["steps"] // batches))):
        for rows in torch.randperm(len(x)).split(MLP["batch"]):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[rows]), y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    log.info("head fit: last batch loss %.5f", float(loss.detach()))
    first = net[1].weight.detach().numpy()
    step = np.abs(first).max(axis=1) / 127 + 1e-12
    return {"hidden_weights": np.clip(np.round(first / step[:, None]), -127, 127).astype(np.int8),
            "hidden_step": step.astype(np.float32), "hidden_bias": net[1].bias.detach().numpy(),
            "feature_mean": mean.astype(np.float32), "feature_scale": scale.astype(np.float32),
            "weights": net[-1].weight.detach().numpy().astype(np.float16), "bias": net[-1].bias.detach().numpy()}


def head_clips(config) -> tuple[list[tuple[str, Path]], list[Path], list[Path]]:
    """What a head is fitted on: (class name, path) of each of `config`'s training clips, its
    background clips (negatives: speech, silence, noise; not the synthesised streets) and those
    of them a placed copy may sit in (CONTEXT_KINDS)."""
    from train.data.background import build_background, read_meta
    from train.data.cache import default_cache_dir
    from train.data.datasets import split_clips

    todo = []
    for spec in config.datasets:
        clips, class_names = split_clips(spec, "train")
        todo += [(class_names[clip.target], clip.path) for clip in clips]
    background, contexts = [], []
    if config.background is not None:
        bg = config.background
        folder = build_background(bg.root or default_cache_dir() / "background", bg.count, bg.seed)
        rows = [row for row in read_meta(folder) if not row["contains"]]
        background = [row["path"] for row in rows if row["kind"] != "street"]
        contexts = [row["path"] for row in rows if row["kind"] in CONTEXT_KINDS]
    return todo, background, contexts


def head_underlay(config, under: int | None = None, kinds=(), below_db=None):
    """(copies of each clip with background laid under them, how: a train.recipe.UnderlayConfig or
    None): the options given, else the recipe's own `background.underlay` (train.data.underlay), HEAD
    ["under"] copies where it lays one or where kinds or levels are given, else none."""
    from train.recipe import UnderlayConfig

    own = config.background.underlay if config.background is not None else None
    if under is None:
        under = HEAD["under"] if own is not None or kinds or below_db else 0
    if not under:
        return 0, None
    base = own or UnderlayConfig()
    return int(under), UnderlayConfig(p=1.0, below_db=tuple(below_db) if below_db else base.below_db,
                                      kinds=tuple(kinds) if kinds else base.kinds)


def underlay_beds(config, underlay=None) -> tuple[list[Path], tuple[float, float]]:
    """The background clips of the recipe laid under copies of its clips as `underlay` (a train.
    recipe.UnderlayConfig; default: the recipe's own `background.underlay`, train.data.underlay) lays
    them, and how far under; none when neither lays any. ConfigError when the recipe has none of
    those kinds to lay."""
    from train.config import ConfigError
    from train.data.background import build_background, read_meta
    from train.data.cache import default_cache_dir

    bg = config.background
    underlay = underlay if underlay is not None else bg.underlay if bg is not None else None
    if underlay is None:
        return [], (0.0, 0.0)
    if bg is None:
        raise ConfigError("background laid under copies of the clips needs the recipe's background clips, and this "
                          "recipe has none: give it `background: {count: 400}` or lay none (--under 0)")
    folder = build_background(bg.root or default_cache_dir() / "background", bg.count, bg.seed)
    beds = [row["path"] for row in read_meta(folder) if not row["contains"] and row["kind"] in underlay.kinds]
    if not beds:
        raise ConfigError(f"the recipe's {bg.count} background clips ({folder}) hold none of kinds "
                          f"{', '.join(underlay.kinds)} to lay under copies of the clips: name other kinds or "
                          f"give the background more clips (background.count)")
    return beds, underlay.below_db


def head_targets(classes, background: int, rows_per_clip: int, labels, partner_classes=()) -> np.ndarray:
    """[N, T] 1 where a feature row is of that label: `classes` (one per training clip) then
    `background` clips of none, each clip's `rows_per_clip` rows in turn (window_features' order),
    the last of them its copies with another clip laid over them when `partner_classes` (per clip and
    background clip, the classes of those laid over it) gives any: of that class too."""
    rows = np.repeat(np.array(list(classes) + [""] * background), rows_per_clip)
    names = np.array(list(labels))
    targets = rows[:, None] == names[None, :]
    if len(partner_classes):
        over = np.array(list(partner_classes))  # [clips, over]
        at = (np.arange(len(over)) * rows_per_clip + rows_per_clip - over.shape[1])[:, None] + np.arange(over.shape[1])
        targets[at.ravel()] |= over.ravel()[:, None] == names[None, :]
    return targets.astype(np.float32)


def head_partners(todo, count: int, over: int, seed: int = 0) -> tuple[list[list[Path]], list[list[str]]]:
    """For each of `count` clips (the training clips `todo`, (class, path) each, then background clips of
    none), `over` training clips of another class to lay over its copies: (their paths, their classes).
    ConfigError when the clips are of fewer than two classes (no clip would have a partner)."""
    from train.config import ConfigError
    from train.data.overlay import STREAM

    rng = np.random.default_rng([seed, STREAM])  # the recipe's overlay's seed word: its own draws
    classes = np.array([name for name, _ in todo])
    if len(set(classes)) < 2:
        raise ConfigError(f"copies with another clip over them need training clips of two classes at least, and "
                          f"these are of {len(set(classes))}: lay none (--over 0)")
    paths, names = [], []
    for i in range(count):
        own = classes[i] if i < len(todo) else None
        chosen = []
        while len(chosen) < over:
            j = int(rng.integers(len(todo)))
            if classes[j] != own:
                chosen.append(j)
        paths.append([todo[j][1] for j in chosen])
        names.append([str(classes[j]) for j in chosen])
    return paths, names


def head_overlay(config, over: int | None = None) -> tuple[int, tuple[float, float]]:
    """(copies of each clip with another clip laid over it, how far under): the option given, else
    HEAD["over"] where the recipe lays clips over its clips (`overlay`, train.data.overlay), else none;
    the recipe's below_db, else train.recipe.OverlayConfig's."""
    from train.recipe import OverlayConfig

    own = getattr(config, "overlay", None)
    over = (HEAD["over"] if own is not None else 0) if over is None else int(over)
    return over, (own or OverlayConfig()).below_db


def fit_head(path: str | Path, config, weight: float | None = None, l2: float | None = None,
             copies: int | None = None, placed: int | None = None, hidden: int | None = None,
             agree: float | None = None, under: int | None = None, under_kinds=(), below_db=None,
             over: int | None = None) -> dict:
    """Fit the head of the bundle at `path` on `config`'s (train.recipe.TrainConfig) training and
    background clips and write it in place (head.npz, then model.json `vocabulary.head`, each
    atomically), with `under` copies of each clip with background of `under_kinds` laid `below_db` under
    it (head_underlay: default the recipe's own underlay, else none), and `over` copies with another training
    clip laid over it, both labels positive (head_overlay: default where the recipe lays them). Returns
    model.json's vocabulary.head."""
    from edge.bundle import read_bundle, write_bundle_meta
    from edge.fsutil import atomic_path, sha256_file
    from edge.labels.embeddings import LabelEmbeddings
    from edge.vocabulary import Head
    from train.config import ConfigError

    weight = HEAD["weight"] if weight is None else float(weight)
    l2 = HEAD["l2"] if l2 is None else float(l2)
    copies = HEAD["copies"] if copies is None else int(copies)
    placed = HEAD["placed"] if placed is None else int(placed)
    hidden = HEAD["hidden"] if hidden is None else int(hidden)
    agree = HEAD["agree"] if agree is None else float(agree)
    if not (0 <= weight <= 1 and 0 <= agree <= 1 and l2 >= 0 and copies >= 0 and placed >= 0 and hidden >= 0):
        raise ConfigError(f"head weight {weight} and agree {agree} must be in [0, 1], l2 {l2} >= 0, "
                          f"copies {copies} >= 0, placed {placed} >= 0 and hidden {hidden} >= 0 (0: a linear head)")
    bundle = read_bundle(path)
    features_name = head_input(bundle)
    sets = {name: LabelEmbeddings.load(bundle.labels_dir / f"{name}.npz").labels
            for name in bundle.meta.vocabulary["trained"]}
    todo, background, contexts = head_clips(config)
    heard = {name for name, _ in todo}
    missing = [f"{name}/{label}" for name, labels in sets.items() for label in labels if label not in heard]
    if missing:
        raise ConfigError(f"the recipe has no training clip of {len(missing)} trained label(s) of the bundle "
                          f"({', '.join(missing[:4])}...): give the recipe the bundle was trained with")
    under, underlay = head_underlay(config, under, under_kinds, below_db)
    beds, below_db = underlay_beds(config, underlay) if under else ([], (0.0, 0.0))
    paths = [p for _, p in todo] + background
    over, over_db = head_overlay(config, over)
    partners, partner_classes = head_partners(todo, len(paths), over) if over else ([], [])
    log.info("fitting the vocabulary head of %s on %d training and %d background clips (+%d augmented copies, "
             "%d placed in a window, %d with background under them and %d with another clip over them each)",
             bundle.path, len(todo), len(background), copies, placed, under, over)
    features = window_features(bundle, paths, copies, what="vocabulary features", placed=placed, contexts=contexts,
                               under=under, beds=beds, below_db=below_db, partners=partners, over_db=over_db)
    names = [f"{name}/{label}" for name, labels in sets.items() for label in labels]
    per_clip = 1 + copies + placed + under + over
    targets = head_targets([name for name, _ in todo], len(background), per_clip,
                           [label for labels in sets.values() for label in labels], partner_classes)
    if hidden:
        arrays = fit_mlp(features, targets, hidden)
    else:
        weights, biases = fit_logistic(features, targets, l2)
        arrays = {"weights": weights.astype(np.float16), "bias": biases}
    logits = Head.from_arrays(arrays, features_name, weight).logits(features)  # as the device computes them
    alone = np.arange(len(targets)) % per_clip < per_clip - over  # one sound a row: what the figures read
    logits, single = logits[alone], targets[alone]
    fit = {}
    for name in sets:
        rows = np.array([n.startswith(f"{name}/") for n in names])
        mine = single[:, rows].any(axis=1)  # clips of this set's labels
        others = ~mine  # every other clip: none of the set's labels may score above 0.5
        fit[name] = {"clips": int(mine.sum() // (per_clip - over)), "train_accuracy": round(float(
            (logits[mine][:, rows].argmax(1) == single[mine][:, rows].argmax(1)).mean()), 4),
            "train_false_positives": round(float((logits[others][:, rows] > 0).any(axis=1).mean()), 4)}
    target = Path(bundle.path) / HEAD_FILE
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays, labels=np.array(names), model_id=np.array(bundle.meta.model_id))
    head = {"file": HEAD_FILE, "sha256": sha256_file(target), "input": features_name, "weight": weight,
            "agree": agree, "clips": len(paths),
            "fit": {**({"hidden": hidden, **MLP} if hidden else {"l2": l2}), "copies": copies, "placed": placed,
                    **({"under": under, "below_db": list(below_db), "kinds": list(underlay.kinds)} if under else {}),
                    **({"over": over, "over_db": list(over_db)} if over else {}),
                    "background": len(background), "sets": fit,
                    "data": ", ".join(str(spec.root) for spec in config.datasets)}}
    write_bundle_meta(bundle.path, dataclasses.replace(bundle.meta, vocabulary={**bundle.meta.vocabulary,
                                                                                 "head": head}))
    return head
