"""SemanticAC as a classifier over a label set: what training and evaluation score clips with.

    class_label_set(spec, classes)    the prompts that name a dataset's classes
    merge_label_sets(sets)            one label space for several datasets
    Prompts(text, label set)          a label set's prompts, tokenized (and featurised) once
    ClassScorer(model, label set)     logits [B, K] of each clip against every class's prompts,
                                      in one module (so DDP sees every parameter in its forward);
                                      with scoring "sigmoid" its logit bias, and the teacher's
                                      vocabulary (train.distill)
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from edge.labels.labelset import DEFAULT_PROMPT, Label, LabelSet, label_key, label_text, resolve_label_set
from train.config import ConfigError
from train.distill import LOGIT_BIAS_INIT
from train.model.semanticac import SemanticAC


def class_label_set(spec: str | None, class_names: list[str], name: str) -> LabelSet:
    """The prompts that name a dataset's classes: a label set's, or the default template's."""
    if spec is None:
        labels = tuple(Label(n, (DEFAULT_PROMPT.format(label=label_text(n)),), 0.5) for n in class_names)
        return LabelSet(name=name, prompt=DEFAULT_PROMPT, labels=labels, source="<dataset classes>")
    label_set = resolve_label_set(spec)
    if label_set.names == list(class_names):
        return label_set
    by_key = {label_key(label.name): label for label in label_set.labels}
    missing = [n for n in class_names if label_key(n) not in by_key]
    extra = sorted(set(by_key) - {label_key(n) for n in class_names})
    if missing or extra:
        raise ConfigError(
            f"label set {label_set.source} and the dataset's classes differ: "
            + "; ".join(
                part
                for part in (
                    f"classes without a label: {', '.join(missing)}" if missing else "",
                    f"labels of no class: {', '.join(extra)}" if extra else "",
                )
                if part
            )
            + ": name each class once in the set (its prompts say how it reads), or leave `labels:` out of the "
            "recipe for the default prompt"
        )
    # the same names in another order: the set's labels, in the dataset's class order
    return replace(label_set, labels=tuple(replace(by_key[label_key(n)], name=n) for n in class_names))


def merge_label_sets(sets: list[LabelSet]) -> LabelSet:
    """One label space for several datasets: a name shared by two is one class (first prompts win)."""
    if len(sets) == 1:
        return sets[0]
    labels, seen = [], set()
    for label_set in sets:
        for label in label_set.labels:
            if label.name not in seen:
                seen.add(label.name)
                labels.append(label)
    return LabelSet(name="+".join(s.name for s in sets), prompt=sets[0].prompt, labels=tuple(labels),
                    source=" + ".join(s.source for s in sets))


class Prompts(nn.Module):
    """One label set's prompts for a text tower: tokenized once; with a frozen tower, its
    features computed once too, so only the projection to C runs per step."""

    def __init__(self, text: nn.Module, label_set: LabelSet, frozen_text: bool):
        super().__init__()
        self.num_classes = len(label_set.labels)
        prompts, owner = label_set.flat_prompts()
        tokens = text.make_tokenizer()(prompts)
        for name, value in tokens.items():
            self.register_buffer(f"tok_{name}", torch.from_numpy(value), persistent=False)
        self.token_names = list(tokens)
        self.register_buffer("owner", torch.tensor(owner), persistent=False)
        self.frozen_text = frozen_text
        if frozen_text:  # eval(): the features must be dropout-free, as export and the device compute them
            was_training = text.training
            with torch.no_grad():
                features = text.eval().forward_features(**self.tokens())
            text.train(was_training)
            self.register_buffer("text_features", features, persistent=False)

    def tokens(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, f"tok_{name}") for name in self.token_names}

    def embeddings(self, text: nn.Module) -> torch.Tensor:
        """[K, C] unit-length class embeddings: each class's prompts' unit embeddings, averaged,
        normalised again (the rule edge.labels.embeddings applies on the device)."""
        prompts = text.proj(self.text_features) if self.frozen_text else text(**self.tokens())
        prompts = F.normalize(prompts, dim=-1)
        sums = torch.zeros(self.num_classes, prompts.shape[1], device=prompts.device, dtype=prompts.dtype)
        return F.normalize(sums.index_add(0, self.owner, prompts), dim=-1)


class ClassScorer(nn.Module):
    """SemanticAC as a classifier over one label set: logits [B, K] of each clip vs each class.

    `scoring="sigmoid"` adds the learnt global `logit_bias` of per-label sigmoid scores
    (train.distill); `vocabulary`: a second label set (the teacher's 521 AudioSet names) whose
    logits `vocabulary_logits` gives for the same audio embeddings.
    """

    def __init__(self, model: SemanticAC, label_set: LabelSet, frozen_text: bool, unseen: list[int] = (),
                 scoring: str = "softmax", vocabulary: LabelSet | None = None):
        super().__init__()
        self.model = model
        self.num_classes = len(label_set.labels)
        # zero-shot runs: classes never trained on are left out of the training softmax (not
        # even as negatives), so their prompts stay unseen until evaluation
        mask = torch.zeros(self.num_classes)
        mask[list(unseen)] = float("-inf")
        self.register_buffer("train_mask", mask, persistent=False)
        self.scoring = scoring
        if scoring == "sigmoid":
            self.logit_bias = nn.Parameter(torch.tensor(LOGIT_BIAS_INIT))
        if not model.text_assisted:
            return
        self.prompts = Prompts(model.text, label_set, frozen_text)
        self.vocabulary = Prompts(model.text, vocabulary, frozen_text) if vocabulary is not None else None

    def class_embeddings(self) -> torch.Tensor:
        """[K, C] unit-length class embeddings."""
        return self.prompts.embeddings(self.model.text)

    def forward(self, mel: torch.Tensor, with_vocabulary: bool = False) -> tuple:
        """(logits [B, K], audio [B, C], classes [K, C]); the one-hot baseline: (logits, None, None).
        `with_vocabulary`: a fourth item, the logits [B, V] against the vocabulary's names (in the
        forward pass, so DDP sees them)."""
        if not self.model.text_assisted:
            return self.model(mel), None, None
        audio, classes = self.model.encode_audio(mel), self.class_embeddings()
        scale = self.model.logit_scale()
        logits = scale * audio @ classes.T
        out = ((logits + self.train_mask) if self.training else logits), audio, classes
        if with_vocabulary:
            out += (scale * audio @ self.vocabulary.embeddings(self.model.text).T,)
        return out

    def scoring_spec(self) -> dict:
        """What model.json `scoring` records for this classifier (edge.bundle)."""
        if self.scoring == "sigmoid":
            return {"kind": "sigmoid", "logit_bias": float(self.logit_bias.detach())}
        return {"kind": "softmax"}
