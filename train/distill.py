"""Per-label sigmoid scores and distillation from the AudioSet teacher.

A softmax over a label set always hands the whole mass to some label, so silence is a car
horn; a label added by YAML never wins against trained ones. A recipe with `scoring: sigmoid`
trains what the device then computes (edge.scoring, model.json `scoring`):

    p_k = sigmoid(logit_scale * cos(audio, text_k) + logit_bias)      one global, learnt bias

with three terms (the loss of `loss`):

    cross-entropy over the trained classes       (labelled clips; as `class_prompt` trains)
  + BCE of p over the trained classes             (labelled clips one-hot, or two-hot with a second
                                                   sound laid over them, background clips all 0)
  + weight x BCE of p over AudioSet's 521 names    against the teacher's scores (train.teacher:
                                                   the original YAMNet) of every clip

The third term is the teacher: the text of 521 named sound classes, the same prompt template,
scored against every clip (background speech, noise, silence included), so the audio-text
space learns "speech", "silence", "frog" ... beyond the trained classes, and the projection
of the frozen text tower is trained on the larger vocabulary. Zero-shot classes (a recipe's
`holdout`) are left out of both supervised terms, as the cross-entropy leaves them out.

Targets: a labelled clip's class index; BACKGROUND (-1) a clip of none of the classes (all
supervised targets 0); UNKNOWN (-2) a clip that may hold a class sound (a synthesised street):
only the teacher's term.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from edge.labels.labelset import DEFAULT_PROMPT, Label, LabelSet, label_text

BACKGROUND = -1  # none of the classes: every supervised target 0
UNKNOWN = -2  # may hold a class sound: no supervised term, only the teacher's
LOGIT_BIAS_INIT = -5.0  # sigmoid(-5 + scale * cos): most of 521 classes are absent from a clip


def vocabulary_label_set(class_names: list[str], prompt: str = DEFAULT_PROMPT) -> LabelSet:
    """The teacher's class names as a label set (one prompt each, the recipe's template)."""
    labels = tuple(Label(name, (prompt.format(label=label_text(name).lower()),), 0.5) for name in class_names)
    return LabelSet(name="audioset", prompt=prompt, labels=labels, source="<teacher classes>")


class WithTeacher(Dataset):
    """A training set whose items also carry the teacher's scores: (mel, target, teacher [521]).

    `unknown`: item indices whose clip may hold a class sound (their target becomes UNKNOWN).
    Everything else (set_epoch, class_names, clip_seconds, ...) is the wrapped set's.
    """

    def __init__(self, dataset: Dataset, teacher: np.ndarray, unknown: set[int] = frozenset()):
        if len(teacher) != len(dataset):
            raise ValueError(f"{len(teacher)} teacher rows for {len(dataset)} items")
        self.dataset, self.teacher, self.unknown = dataset, np.asarray(teacher, np.float32), set(unknown)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple:
        mel, target, *_ = self.dataset[i]
        return mel, (UNKNOWN if i in self.unknown else target), self.teacher[i]

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def sigmoid_loss(logits: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor,
                 teacher_logits: torch.Tensor | None = None, teacher: torch.Tensor | None = None,
                 weight: float = 1.0, partners: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The three terms of the module docstring. `logits` [B, K] = scale * cosine (no mask);
    `seen` bool [K]: the classes that train (not zero-shot); `teacher_logits` [B, 521] the same
    for the teacher's names, `teacher` [B, 521] its scores; `partners` [B]: a second class
    heard in the clip (train.data.overlay; negative: none), present in the BCE and sharing the
    cross-entropy's target with the first. Returns (loss, each term's value)."""
    logits = logits.float()
    labelled = targets >= 0
    terms: dict[str, torch.Tensor] = {}
    present = torch.zeros_like(logits)
    rows = torch.arange(len(targets), device=targets.device)
    present[rows[labelled], targets[labelled]] = 1.0
    paired = torch.zeros_like(labelled)  # rows with a second sound
    if partners is not None:
        paired = labelled & (partners >= 0)
        present[rows[paired], partners[paired]] = 1.0
    if labelled.any():
        masked = logits[labelled].masked_fill(~seen, float("-inf"))
        if not paired.any():
            terms["ce"] = F.cross_entropy(masked, targets[labelled])
        else:  # a clip of two sounds: the target's mass shared between them
            share = present[labelled] / present[labelled].sum(dim=1, keepdim=True)
            terms["ce"] = -(share * F.log_softmax(masked, dim=1).masked_fill(~seen, 0.0)).sum(dim=1).mean()
    supervised = targets >= BACKGROUND  # labelled and pure background rows
    if supervised.any():
        terms["bce"] = F.binary_cross_entropy_with_logits((logits[supervised] + bias)[:, seen],
                                                          present[supervised][:, seen])
    if teacher_logits is not None:
        terms["teacher"] = weight * F.binary_cross_entropy_with_logits(teacher_logits.float() + bias, teacher.float())
    loss = sum(terms.values())
    return loss, {name: float(value.detach()) for name, value in terms.items()}
