"""What needs a CUDA GPU, checked and timed: a training step, and FP16 numerics vs CPU FP32.

    python benchmarks/gpu_check.py [--config paper] [--batch 16]

On a machine with a CUDA GPU: one SemanticAC training step (forward, loss, backward, SGD)
on the GPU under mixed precision, then the audio embedding under FP16 autocast compared with
the CPU in FP32 (cosine, max |diff|), and the time of each. Elsewhere it prints one line
saying why and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from train.model.config import load_model_config
from train.model.loss import SemanticLoss
from train.model.semanticac import build_model


def timed(fn, repeats: int = 5) -> tuple[float, object]:
    out = fn()  # warm-up (cuDNN autotuning, allocator)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="paper", help="model config: paper, small or a path")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to check")
        return
    torch.manual_seed(0)
    config = load_model_config(args.config)
    fe = config.frontend
    model = build_model(config)
    tokenizer = model.text.make_tokenizer()
    names = [f"class {i}" for i in range(args.batch)]
    tokens = {k: torch.from_numpy(v) for k, v in tokenizer([f"an audio clip of {n}" for n in names]).items()}
    mel = torch.randn(args.batch, 1, fe.frames, fe.n_mels) * 20 - 40
    classes = torch.arange(args.batch)
    print(f"gpu_check on {torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda}); "
          f"model {config.name}, batch {args.batch}")

    # A training step under mixed precision.
    gpu = model.cuda().train()
    loss_fn = SemanticLoss()
    optimizer = torch.optim.SGD(gpu.parameters(), lr=8e-5, momentum=0.9, weight_decay=5e-4)
    scaler = torch.amp.GradScaler("cuda")
    mel_g, tokens_g, classes_g = mel.cuda(), {k: v.cuda() for k, v in tokens.items()}, classes.cuda()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            audio, text = gpu.encode_audio(mel_g), gpu.encode_text(**tokens_g)
            loss = loss_fn(audio.float(), text.float(), classes_g, gpu.logit_scale())
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    seconds, loss = timed(step)
    finite = all(torch.isfinite(p.grad).all() for p in gpu.parameters() if p.grad is not None)
    print(f"training step (AMP fp16): {seconds * 1000:.1f} ms, loss {loss.item():.4f}, finite gradients: {finite}, "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")

    # FP16 inference vs CPU FP32 on the same weights.
    gpu.eval()
    with torch.no_grad():
        cpu_emb = gpu.cpu().encode_audio(mel)
        gpu.cuda()
        seconds32, emb32 = timed(lambda: gpu.encode_audio(mel_g))
        with torch.autocast("cuda", dtype=torch.float16):
            seconds16, emb16 = timed(lambda: gpu.encode_audio(mel_g))
    for name, emb, sec in (("fp32 GPU", emb32, seconds32), ("fp16 autocast GPU", emb16, seconds16)):
        emb = emb.float().cpu()
        cosine = F.cosine_similarity(emb, cpu_emb, dim=-1)
        print(f"{name:>18} vs CPU fp32: cosine min {cosine.min():.6f}, max |diff| {(emb - cpu_emb).abs().max():.2e}; "
              f"{sec * 1000:.1f} ms per batch of {args.batch} ({sec * 1000 / args.batch:.2f} ms per window)")


if __name__ == "__main__":
    sys.exit(main())
