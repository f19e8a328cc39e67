"""Training-side log-mel: the `edge.features` definition, in torch, for fast batches on a GPU.

A twin of `edge.features.log_mel`, built from the same `Frontend`; a parity test holds the
two within 1e-2 dB. The mel filterbank is edge's own matrix (one definition; a test checks
it against torchaudio's Slaney filters), the STFT is torch's.
"""

from __future__ import annotations

import torch
from torch import nn

from edge.features import Frontend, mel_filterbank


class LogMel(nn.Module):
    """Waveforms [B, n] (float32, model rate) -> log-mel [B, 1 + n // hop, n_mels]."""

    def __init__(self, frontend: Frontend = Frontend()):
        super().__init__()
        self.frontend = frontend
        window = torch.hann_window(frontend.win_length, periodic=True)
        fbank = torch.from_numpy(mel_filterbank(frontend).copy())  # [n_freqs, n_mels]
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("fbank", fbank, persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        fe = self.frontend
        # STFT with centred, reflect-padded frames: [B, n_freqs, T] complex
        spec = torch.stft(waveforms, n_fft=fe.n_fft, hop_length=fe.hop_length, win_length=fe.win_length,
                          window=self.window, center=fe.center, pad_mode=fe.pad_mode, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        if fe.power == 1.0:
            power = power.sqrt()  # magnitude
        mel = power.transpose(1, 2) @ self.fbank  # [B, T, n_mels]
        if fe.log == "ln":
            return torch.log(mel + fe.log_floor)
        return 10.0 * torch.log10(mel.clamp_min(fe.log_floor))
