"""Loaders for the official pretrained weight files.

Every loader maps a file's keys onto our modules (whose names were chosen to match, so a
mapping is mostly a prefix strip), reports what it did in a `LoadReport`, and stops with the
key, both shapes and the file on any shape mismatch: a half-loaded model must never train.

- `load_htsat_checkpoint`: HTS-AT's AudioSet checkpoints (`HTSAT_AudioSet_Saved_*.ckpt`,
  Lightning, prefix `sed_model.`) and LAION-CLAP's (prefix `audio_branch.`).
- `load_mapped`: the shared last step of a loader (shape check, load, report); YAMNet's
  loader (train/model/yamnet.py) uses it too.
- the CLIP RN50 text tower: train/model/clip_weights.py (reuses LoadReport).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Union

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]
PathOrStateDict = Union[str, Path, StateDict]


@dataclass
class LoadReport:
    """What a loader did with each key: `matched` and `missing` hold the model's names,
    `unexpected` and `ignored` the file's own keys."""

    matched: list[str] = field(default_factory=list)  # loaded into the model
    missing: list[str] = field(default_factory=list)  # the model has it, the file does not
    unexpected: list[str] = field(default_factory=list)  # the file has it, the model does not
    ignored: list[str] = field(default_factory=list)  # deliberately left out (heads, frontends, ...)
    source: str = "<state_dict>"

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def summary(self) -> str:
        lines = [f"{self.source}: {len(self.matched)} matched, {len(self.missing)} missing, "
                 f"{len(self.unexpected)} unexpected, {len(self.ignored)} ignored"]
        for name in ("missing", "unexpected"):
            keys = getattr(self, name)
            if keys:
                shown = ", ".join(keys[:10]) + (f", ... ({len(keys) - 10} more)" if len(keys) > 10 else "")
                lines.append(f"  {name}: {shown}")
        return "\n".join(lines)


class CheckpointMismatchError(ValueError):
    """The file does not fit the model: a shape mismatch, or missing/unexpected keys when strict."""


def read_checkpoint(path: str | Path) -> dict:
    """torch.load on the CPU, tensors only when possible.

    Lightning files also hold training state (optimizer, callbacks, hyper-parameters); when
    one pickles an object that `weights_only` refuses, load it fully, which runs code from the
    file: do that only for files from a source you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if "Weights only load failed" not in str(err):  # not objects weights_only refused: not a checkpoint
                raise
            log.warning("%s holds objects beyond tensors (%s); loading it with weights_only=False, "
                        "which executes code from the file: trust its source", path, str(err).splitlines()[0])
            return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        raise CheckpointMismatchError(unreadable_weights(path, err)) from None


def unreadable_weights(path: Path, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return (f"{path} cannot be read as torch weights ({type(err).__name__}{': ' + first[:160] if first else ''}): "
            "pass the checkpoint file itself (HTS-AT's .ckpt, OpenAI's RN50.pt), not an archive, a page or a "
            "partial download")


def _state_dict_of(path_or_state_dict: PathOrStateDict) -> tuple[StateDict, str]:
    """(state dict, source name) from a path, a full checkpoint dict, or a bare state dict."""
    if isinstance(path_or_state_dict, (str, Path)):
        ckpt, source = read_checkpoint(path_or_state_dict), str(path_or_state_dict)
    else:
        ckpt, source = path_or_state_dict, "<state_dict>"
    if not isinstance(ckpt, Mapping):
        raise CheckpointMismatchError(f"{source} holds a {type(ckpt).__name__}, not a state dict of named tensors")
    if "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
        ckpt = ckpt["state_dict"]  # Lightning and LAION-CLAP files
    return ckpt, source


Mapped = dict[str, tuple[str, torch.Tensor]]  # model name -> (the file's key, tensor)


def load_mapped(model: nn.Module, mapped: Mapped, derived: Mapped, report: LoadReport,
                 strict: bool) -> LoadReport:
    """Check shapes, load `mapped`, and fill in the report's matched/missing/unexpected.

    `derived` are the file's constant buffers that the model recomputes from its config and
    does not save (relative position indices, shifted-window masks): their shapes are checked,
    then they are ignored; one the model has no buffer for is unexpected.
    """
    own = model.state_dict()
    buffers = dict(model.named_buffers())
    for name, (key, value) in {**mapped, **derived}.items():
        target = own.get(name, buffers.get(name))
        if target is not None and target.shape != value.shape:
            raise CheckpointMismatchError(
                f"{report.source}: '{key}' has shape {list(value.shape)} in the file but the model's "
                f"'{name}' has {list(target.shape)}: the file is for another architecture")
    for name, (key, _) in derived.items():
        (report.ignored if name in buffers else report.unexpected).append(key)
    report.unexpected += [key for name, (key, _) in mapped.items() if name not in own]
    loadable = {name: value for name, (_, value) in mapped.items() if name in own}
    report.missing += [name for name in own if name not in loadable]
    report.matched += list(loadable)
    model.load_state_dict(loadable, strict=False)
    if strict and not report.ok:
        raise CheckpointMismatchError(report.summary())
    log.info(report.summary())
    return report


# -----------------------------------------------------------------------------
# HTS-AT

# Where the audio encoder sits in each known file: the HTS-AT training wrapper (`sed_model`),
# LAION-CLAP (`audio_branch`); `module.` when saved from DistributedDataParallel.
HTSAT_PREFIXES = ("sed_model.", "audio_branch.", "module.sed_model.", "module.audio_branch.", "")
# Parts of the original model that ours leaves out: the AudioSet head, and the frozen STFT and
# mel kernels (the log-mel is computed outside the model, see edge/features.py).
HTSAT_IGNORED = ("head.", "tscam_conv.", "spectrogram_extractor.", "logmel_extractor.")
# Constant buffers the original saves and we recompute from the config.
HTSAT_DERIVED = ("relative_position_index", "attn_mask")


def load_htsat_checkpoint(model: nn.Module, path_or_state_dict: PathOrStateDict,
                          strict: bool = True) -> LoadReport:
    """Load official HTS-AT weights into `model` (train.model.htsat.HTSAT).

    Accepts a path or an already loaded checkpoint/state dict. Keys outside the audio encoder
    (a CLAP file's text tower, projections, logit scale) and the parts in `HTSAT_IGNORED` are
    reported as ignored. A shape mismatch always raises; missing or unexpected encoder keys
    raise when `strict`, else they are only reported.
    """
    state, source = _state_dict_of(path_or_state_dict)
    report = LoadReport(source=source)
    prefix = next((p for p in HTSAT_PREFIXES if f"{p}patch_embed.proj.weight" in state), None)
    if prefix is None:
        raise CheckpointMismatchError(
            f"{source}: no HTS-AT weights found: expected a key '<prefix>patch_embed.proj.weight' with "
            f"prefix one of {[p for p in HTSAT_PREFIXES if p]} (or none); the file's first keys are "
            f"{list(state)[:5]}")
    log.info("%s: HTS-AT weights under prefix '%s'", source, prefix)
    mapped, derived = {}, {}
    for key, value in state.items():
        name = key[len(prefix):]
        if not key.startswith(prefix) or name.startswith(HTSAT_IGNORED):
            report.ignored.append(key)
        elif name.rsplit(".", 1)[-1] in HTSAT_DERIVED:
            derived[name] = (key, value)
        else:
            mapped[name] = (key, value)
    return load_mapped(model, mapped, derived, report, strict)

