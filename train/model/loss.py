"""Losses: SemanticAC's symmetric contrastive loss (paper Eq. 3), the one-hot baseline's
cross-entropy, and CLIP's learnable logit scale. (The recipes' `class_prompt` loss, a
cross-entropy over every class's prompts, is the training loop's: train/loop.py, loss_of.)

Embeddings are L2-normalised by the caller (the top model), as in open_clip's ClipLoss,
so `a @ t.T` is the cosine similarity of Eq. 2.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class LogitScale(nn.Module):
    """CLIP's learnable temperature: a log-scale, initialised to log(1/0.07), whose
    multiplier stays in [1, 100].

    `forward()` / `value()` clamp, so the multiplier never leaves the range; past the top
    the gradient is zero, so call `clamp_()` after each optimizer step (as CLIP does) to put
    the parameter back on the bound, where the gradient still flows. Keep `log_scale` out of
    weight decay (CLIP and open_clip do).
    """

    def __init__(self, init: float = 1 / 0.07, max_value: float = 100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)))
        self.max_log = math.log(max_value)  # 100: CLIP's cap, keeps training from going unstable

    def value(self) -> torch.Tensor:
        # Lower bound log 1 = 0 as CLIP: a multiplier below 1 would flatten every softmax.
        return self.log_scale.clamp(0.0, self.max_log).exp()

    def forward(self) -> torch.Tensor:
        return self.value()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_scale.clamp_(0.0, self.max_log)


def mask_same_class(logits: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
    """`logits` (B, B) with every off-diagonal same-class pair set to -inf (the diagonal stays)."""
    same = class_ids[:, None] == class_ids[None, :]
    off_diagonal = ~torch.eye(len(class_ids), dtype=torch.bool, device=logits.device)
    return logits.masked_fill(same & off_diagonal, float("-inf"))


class SemanticLoss(nn.Module):
    """Paper Eq. 3: Loss = 1/2 [CE(S, Y) + CE(S', Y)], S = scale * cosine similarity of the
    batch's audio embeddings (rows) against the embeddings of their labels (columns).

    Same-class pairs are not negatives: their off-diagonal logits are masked off (-inf),
    so they drop out of both softmaxes; each row and each column keeps its own positive and
    the pairs of other classes. We mask rather than spread a soft target over them because
    the minimum then stays 0 whatever the batch's class make-up (a soft target's floor is
    its entropy, which moves with the number of same-class clips), so logged losses stay
    comparable. Since every clip's text is its label's prompt, two clips of one class have
    the same text column: with the mask, adding a same-class clip leaves a clip's
    audio->text term unchanged. (A class that appears twice still counts twice as a
    negative for the other classes, as in any in-batch loss; `class_prompt_cross_entropy`
    has no such bias.) `class_ids=None` treats every pair as a different class: the
    paper's Eq. 3 as printed.
    """

    def forward(
        self,
        audio_emb: torch.Tensor,
        text_emb: torch.Tensor,
        class_ids: torch.Tensor | None,
        logit_scale: torch.Tensor | float,
    ) -> torch.Tensor:
        if audio_emb.shape != text_emb.shape or audio_emb.ndim != 2:
            raise ValueError(
                "audio_emb and text_emb must both be (B, C); "
                f"got {tuple(audio_emb.shape)} and {tuple(text_emb.shape)}"
            )
        if class_ids is not None and class_ids.shape != audio_emb.shape[:1]:
            batch = tuple(audio_emb.shape[:1])
            raise ValueError(f"class_ids must be (B,) = {batch}; got {tuple(class_ids.shape)}")
        logits = logit_scale * audio_emb @ text_emb.T  # scaled cosine similarities s_ij (Eq. 2): (B, B)
        if class_ids is not None:
            logits = mask_same_class(logits, class_ids)  # same-class pairs are not negatives
        target = torch.arange(len(logits), device=logits.device)  # positives on the diagonal
        # Audio -> text along the rows, text -> audio along the columns (S'), averaged.
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class OneHotLoss(nn.Module):
    """The baseline's loss: plain cross-entropy of class logits (B, K) against class ids (B,)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets)
