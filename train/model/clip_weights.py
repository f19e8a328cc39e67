"""Load OpenAI's CLIP RN50 weights (`RN50.pt`) into the CLIP text tower (train.model.text_clip).

OpenAI ships RN50.pt as a TorchScript archive with fp16 weights; re-saved copies are plain
`torch.save` state dicts. Either way the text tower's keys (listed in clip_rn50_text_keys.txt in
$SEMANTICAC_REFERENCE) are our parameter names, so loading is by name with a shape check:

    token_embedding.*, positional_embedding, transformer.resblocks.*, ln_final.*, text_projection -> loaded
    visual.*                                          -> ignored (SemanticAC's audio tower replaces it)
    logit_scale                                       -> ignored (the top model owns its logit scale)
    input_resolution, context_length, vocab_size      -> ignored (TorchScript attributes, not weights)

Our projection to C (`proj.*`) is in no CLIP file: it keeps its initialisation and is not
reported missing.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from train.model.text_clip import NEW_PARAMETERS
from train.model.weights import CheckpointMismatchError, LoadReport, unreadable_weights

log = logging.getLogger(__name__)

IGNORED_PREFIXES = ("visual.",)
IGNORED_KEYS = ("logit_scale", "input_resolution", "context_length", "vocab_size")


def is_torchscript_archive(path: Path) -> bool:
    """TorchScript archives carry their code (`<name>/code/...`); torch.save files do not."""
    if not zipfile.is_zipfile(path):
        return False  # the legacy (pre-1.6) torch.save format
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The whole CLIP state dict (visual and text), from a TorchScript archive or a plain file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP checkpoint not found: {path} (OpenAI's RN50.pt, or a torch.save state dict)")
    try:
        if is_torchscript_archive(path):
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        raise CheckpointMismatchError(unreadable_weights(path, err)) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a training checkpoint that wraps it
    if not isinstance(state, Mapping):
        raise CheckpointMismatchError(f"{path} holds a {type(state).__name__}, not a CLIP state dict")
    return dict(state)


def load_clip_text_checkpoint(
    tower: nn.Module, path_or_state_dict: str | Path | Mapping[str, torch.Tensor], strict: bool = True
) -> LoadReport:
    """Load a CLIP checkpoint's text tower into `tower` (a ClipTextTower); returns what happened.

    A shape mismatch always raises, naming the key and both shapes. Missing or unexpected text
    keys raise when `strict`, else they are only reported.
    """
    if isinstance(path_or_state_dict, Mapping):
        state, source = dict(path_or_state_dict), "<state_dict>"
    else:
        state, source = read_clip_state_dict(path_or_state_dict), str(path_or_state_dict)
    report = LoadReport(source=source)
    own = {k: v for k, v in tower.state_dict().items() if not k.startswith(NEW_PARAMETERS)}
    loadable = {}
    for key, value in state.items():
        if key.startswith(IGNORED_PREFIXES) or key in IGNORED_KEYS:
            report.ignored.append(key)
        elif key not in own:
            report.unexpected.append(key)
        elif value.shape != own[key].shape:
            raise CheckpointMismatchError(
                f"{source}: '{key}' has shape {list(value.shape)} in the file but the tower's has "
                f"{list(own[key].shape)}: the file is another CLIP; set the tower's width/layers/clip_dim "
                "to match (RN50: width 512, 12 layers, clip_dim 1024)"
            )
        else:
            loadable[key] = value
    report.matched = list(loadable)
    report.missing = [key for key in own if key not in loadable]
    tower.load_state_dict(loadable, strict=False)  # casts OpenAI's fp16 to the tower's dtype
    if strict and not report.ok:
        raise CheckpointMismatchError(report.summary())
    log.info(report.summary())
    return report
