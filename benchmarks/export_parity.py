"""Export equivalence, in figures: ONNX Runtime vs torch, and an FP16 graph vs FP32.

    python benchmarks/export_parity.py --checkpoint RUN/best.pt [--limit 400]
    python benchmarks/export_parity.py --random-init --config small

1. Exports the model into a temporary bundle and runs both graphs in ONNX Runtime (CPU)
   against torch: max |difference| of the normalised audio embeddings on random log-mels and
   on real clips, and of the text embeddings on every prompt of the esc50 and urban sets.
2. Makes the FP16 copy of the audio graph that TensorRT 11+ builds from (weights and
   activations half, I/O float32; edge.backends.tensorrt.builder.fp16_onnx_copy) and compares it with FP32 on
   the real development clips ($SEMANTICAC_DATA): cosine of the embeddings and agreement of
   the top-1 label (esc50 labels for ESC-50 clips, urban for UrbanSound8K).
Targets (issue 3): ONNX Runtime vs torch <= 1e-4; FP16 top-1 agreement >= 99.5%, cosine >= 0.999.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.backends.tensorrt.builder import fp16_onnx_copy
from edge.bundle import read_bundle
from edge.capture.audio import read_audio
from edge.features import log_mel, tile_frames
from edge.labels.embeddings import find_label_embeddings
from edge.labels.labelset import resolve_label_set
from edge.labels.tokenizers import load_tokenizer
from edge.scoring import Scorer
from train.checkpoint import model_from_checkpoint, model_id
from train.export import embed_prompts, export_bundle
from train.model.config import load_model_config
from train.model.semanticac import build_model


def dev_clips(limit: int) -> list[tuple[Path, str]]:
    """(path, label set) of the development clips, ESC-50 and UrbanSound8K interleaved."""
    root = Path(os.environ.get("SEMANTICAC_DATA", ""))
    if not (root / "esc50").is_dir():
        return []
    esc = [(root / "esc50/audio" / r["filename"], "esc50") for r in csv.DictReader(open(root / "esc50/meta.csv"))]
    us8k = [(root / f"us8k/audio/fold{r['fold']}" / r["slice_file_name"], "urban")
            for r in csv.DictReader(open(root / "us8k/meta.csv"))]
    both = [c for pair in zip(esc, us8k) for c in pair] + esc[len(us8k):] + us8k[len(esc):]
    return both[:limit] if limit else both


def window_mel(path: Path, frontend, clip_seconds: float) -> np.ndarray:
    """A clip's log-mel, cut to the clip length and tiled to the model's frames: [1, T, F]."""
    x = read_audio(path, frontend.sample_rate)[: frontend.seconds_to_samples(clip_seconds)]
    return tile_frames(log_mel(x, frontend), frontend.frames)[None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a checkpoint written by `semanticac-train fit`")
    parser.add_argument("--random-init", action="store_true", help="fresh weights of --config instead")
    parser.add_argument("--config", default="small", help="model config for --random-init")
    parser.add_argument("--limit", type=int, default=400, help="real clips to compare (0: all)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    args = parser.parse_args()
    if args.checkpoint:
        model, config, state = model_from_checkpoint(args.checkpoint)
        clip_seconds = state.get("clip_seconds", 10.0)
    else:
        torch.manual_seed(0)
        config = load_model_config(args.config)
        model, clip_seconds = build_model(config).eval(), 10.0
    fe = config.frontend
    clips = dev_clips(args.limit)
    sets = {name: resolve_label_set(name) for name in ("esc50", "urban")}

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bundle"
        start = time.perf_counter()
        export_bundle(model, config, out, model_id=model_id(model, config), clip_seconds=clip_seconds,
                      label_sets=list(sets.values()))
        bundle = read_bundle(out, verify=True)
        print(f"model {config.name}: exported in {time.perf_counter() - start:.1f} s; "
              f"{len(clips)} real clips ({'$SEMANTICAC_DATA unset' if not clips else 'development data'})")
        audio = OnnxRuntimeBackend.for_bundle(bundle, "audio", threads=args.threads)
        text = OnnxRuntimeBackend.for_bundle(bundle, "text", threads=args.threads)

        # 1. ONNX Runtime vs torch
        rng = np.random.default_rng(0)
        random_mels = rng.normal(-40, 20, (4, 1, fe.frames, fe.n_mels)).astype(np.float32)
        real_mels = [window_mel(p, fe, clip_seconds) for p, _ in clips[:8]]
        diffs = {"random": [], "real": []}
        for kind, mels in (("random", list(random_mels)), ("real", real_mels)):
            for mel in mels:
                with torch.no_grad():
                    want = model.encode_audio(torch.from_numpy(mel[None])).numpy()
                diffs[kind].append(np.abs(audio.embed(mel[None]) - want).max())
        prompts = [p for s in sets.values() for p in s.flat_prompts()[0]]
        tokenizer = load_tokenizer(bundle.tokenizer_dir)
        got = np.concatenate([text.run(tokenizer(prompts[i:i + 32]))["embedding"] for i in range(0, len(prompts), 32)])
        text_diff = np.abs(got - embed_prompts(model, model.text.make_tokenizer(), prompts)).max()
        print("ONNX Runtime vs torch (max |diff| of unit-length embeddings; target <= 1e-4)")
        print(f"  audio, random log-mels   {max(diffs['random']):.2e}  ({len(diffs['random'])} inputs)")
        if diffs["real"]:
            print(f"  audio, real clips        {max(diffs['real']):.2e}  ({len(diffs['real'])} clips)")
        print(f"  text, label prompts      {text_diff:.2e}  ({len(prompts)} prompts)")

        # 2. FP16 graph vs FP32 on real clips
        if not clips:
            print("FP16 vs FP32: skipped (set SEMANTICAC_DATA to the development data)")
            return
        fp16 = OnnxRuntimeBackend(fp16_onnx_copy(bundle.audio_path, Path(tmp) / "model.fp16.onnx"),
                                  threads=args.threads)
        scorers = {name: Scorer.for_bundle(bundle.meta, find_label_embeddings(bundle, s)) for name, s in sets.items()}
        cosines, agree = [], 0
        start = time.perf_counter()
        for path, set_name in clips:
            mel = window_mel(path, fe, clip_seconds)[None]
            a, b = audio.embed(mel)[0], fp16.embed(mel)[0]
            cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
            scorer = scorers[set_name]
            agree += int(np.argmax(scorer(a)) == np.argmax(scorer(b)))
        cosines = np.array(cosines)
        print(f"FP16 copy vs FP32, audio graph, ONNX Runtime CPU ({len(clips)} clips, "
              f"{time.perf_counter() - start:.0f} s; targets: top-1 >= 99.5%, cosine >= 0.999)")
        print(f"  top-1 agreement          {agree / len(clips):.2%}  ({agree}/{len(clips)})")
        print(f"  cosine                   min {cosines.min():.5f}  mean {cosines.mean():.5f}")


if __name__ == "__main__":
    main()
