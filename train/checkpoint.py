"""Training checkpoints: plain dicts of tensors and primitives, written atomically.

    {"format": "semanticac-train/1", "model_config": {...}, "model": state_dict, ...}

The training loop adds its own entries (optimizer, scheduler, epoch, metrics, rng); every
value is a tensor, a number, a string, a list or a dict, so `torch.load(weights_only=True)`
reads it without running code from the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from edge.fsutil import atomic_path
from train.config import from_dict, to_dict
from train.model.config import ModelConfig
from train.model.semanticac import SemanticAC, build_model

FORMAT = "semanticac-train/1"


class CheckpointError(ValueError):
    """A file that is not a checkpoint written by `semanticac-train fit`."""


def save_checkpoint(path: str | Path, model: SemanticAC, config: ModelConfig, **extra) -> Path:
    state = {"format": FORMAT, "model_config": to_dict(config), "model": model.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); "
                         "pass a .pt file written by `semanticac-train fit`") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint {path} has format {found!r}, expected {FORMAT!r}: "
                         "pass a .pt file written by `semanticac-train fit`")
    return state


def model_from_checkpoint(path: str | Path) -> tuple[SemanticAC, ModelConfig, dict]:
    """The model a checkpoint describes, with its weights loaded, in eval mode."""
    state = load_checkpoint(path)
    missing = [key for key in ("model_config", "model") if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}: it is not a whole checkpoint of "
                              "`semanticac-train fit`; pass its last.pt or best.pt")
    config = from_dict(ModelConfig, state["model_config"], where=f"{path} model_config")
    model = build_model(config)
    model.load_state_dict(state["model"])
    return model.eval(), config, state


def model_id(model: SemanticAC, config: ModelConfig) -> str:
    """Identity of the trained weights of both towers (and the config that shapes them).

    A hash of the parameters and buffers, so it is the same for every export of the same
    weights, whatever graph precision or engine is built from them later.
    """
    digest = hashlib.sha256(repr(sorted(to_dict(config).items())).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{config.name}-{digest.hexdigest()[:16]}"
