"""The training loop: `fit` a recipe on the CPU, one GPU (AMP) or several (DDP).

    prepare(recipe) -> Run            data, label space, model (seeded) and its ClassScorer
    Trainer(recipe, run)              the state that changes while a run trains, one step each:
      .resume(last.pt)                  continue exactly where last.pt stopped
      .train_epoch(epoch)               one pass over the training set (AMP on a GPU, DDP)
      .validate()                       accuracy of every validation set; their mean picks best.pt
      .kept                             the weights validated and saved: their moving average with
                                        optim.ema, else the trained ones
      .save(out, epoch, ...)            last.pt every epoch, best.pt when the score improves, atomically
    fit(recipe, out)                  prepare, then train, validate and save each epoch
    distributed()                     the block runs in the process group torchrun set up

Determinism: the shuffle of epoch e is seeded by (seed, e), each item's augmentation by
(seed, epoch, index), and the torch RNG state (DropPath) is saved with every checkpoint, so
a run resumed from last.pt ends with the weights an uninterrupted run has.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from edge import __version__
from edge.features import Frontend
from edge.fsutil import remove_stale_temporaries, unwritable_reason
from edge.labels.labelset import LabelSet
from train.augment import Augment
from train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from train.config import ConfigError, to_dict
from train.data import ClipDataset, DataSpec, build_dataset, check_held_out, collate, make_loader, split_clips
from train.data.background import BackgroundDataset
from train.data.cache import default_cache_dir
from train.data.combined import CombinedDataset
from train.data.overlay import Overlay
from train.data.underlay import Underlay
from train.distill import WithTeacher, sigmoid_loss, vocabulary_label_set
from train.evaluation import evaluate
from train.model.config import ModelConfig, load_model_config
from train.model.loss import OneHotLoss, SemanticLoss
from train.model.semanticac import SemanticAC, build_model
from train.progress import bar as progress_bar
from train.recipe import TrainConfig
from train.scorer import ClassScorer, class_label_set, merge_label_sets

log = logging.getLogger(__name__)
# Each epoch's figures, shown at the CLI's default verbosity (a logger with its own level passes
# its records to the root's handlers whatever the root's level): a long run in a log file says
# how it goes without -v.
epochs_log = logging.getLogger(f"{__name__}.epochs")
epochs_log.setLevel(logging.INFO)

NO_DECAY = ("bias", "norm", "bn0", "log_scale", "relative_position_bias_table", "embedding", "positional")


def loss_of(kind: str, logits, audio, classes, targets, scale) -> torch.Tensor:
    """A batch's loss: the one-hot baseline's cross-entropy, `semantic` (paper Eq. 3) or
    `class_prompt` (cross-entropy of each clip against every class's prompts)."""
    if audio is None:
        return OneHotLoss()(logits, targets)
    if kind == "semantic":  # paper Eq. 3 over the batch; same-class pairs are not negatives
        return SemanticLoss()(audio.float(), classes[targets].float(), targets, scale)
    return F.cross_entropy(logits.float(), targets)


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: never on biases, norms, embeddings or the logit scale."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or any(s in name for s in NO_DECAY) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(config: TrainConfig, module: nn.Module):
    o = config.optim
    groups = parameter_groups(module, o.weight_decay)
    if o.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)
    else:
        optimizer = torch.optim.AdamW(groups, lr=o.lr)

    def factor(epoch: int) -> float:  # linear warm-up to the full rate, then ExponentialLR's gamma
        if epoch < o.warmup_epochs:
            return (epoch + 1) / (o.warmup_epochs + 1)
        return o.gamma ** (epoch - o.warmup_epochs)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def freeze(model: SemanticAC, config: TrainConfig) -> None:
    if config.freeze_audio:
        model.audio.requires_grad_(False)
    if config.freeze_audio_layers is not None:
        trunk = getattr(model.audio, "trunk", None)
        if trunk is None:
            raise ValueError("freeze_audio_layers applies to the YAMNet audio tower only (model: yamnet)")
        for layer in list(trunk)[: config.freeze_audio_layers]:
            layer.requires_grad_(False)
    if config.freeze_text and model.text is not None:
        model.text.requires_grad_(False)
        model.text.proj.requires_grad_(True)  # the projection to C is ours: it always learns


def load_pretrained(model: SemanticAC, audio: str | None, text: str | None) -> None:
    """Official weights into the towers (HTS-AT AudioSet, CLIP RN50); what loaded is logged."""
    if audio:
        from train.model.weights import load_htsat_checkpoint

        log.info("%s", load_htsat_checkpoint(model.audio, audio, strict=False).summary())
    if text:
        from train.model.clip_weights import load_clip_text_checkpoint

        log.info("%s", load_clip_text_checkpoint(model.text, text, strict=False).summary())


@dataclass
class Validation:
    name: str
    dataset: ClipDataset
    classes: list[int] | None  # indices of its classes in the merged label space (None: all)
    picks_best: bool = True  # zero-shot figures are reported, never used to choose best.pt
    split: str = "val"  # "test": official folds held out, reported (test_accuracy), never used to choose best.pt


@dataclass
class Run:
    """Everything fit() builds from a recipe before its first epoch."""

    model: SemanticAC
    model_config: ModelConfig
    scorer: ClassScorer
    train_set: ClipDataset | CombinedDataset
    validation: list[Validation]
    device: torch.device


def prepare(config: TrainConfig, pretrained_audio: str | None = None, pretrained_text: str | None = None) -> Run:
    """The data, the merged label space and the model (seeded) of a recipe, on this process's device."""
    torch.manual_seed(config.seed)
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() \
        else torch.device("cpu")
    model_config = load_model_config(config.model)
    if model_config.head["kind"] == "onehot" and model_config.num_classes is None:
        raise ValueError("the one-hot baseline needs num_classes in its model config")
    train_set, validation, label_set, unseen = build_data(config, model_config.frontend)
    if config.scoring == "softmax" and len(label_set.labels) < 2:
        raise ConfigError(
            f"the data has one class ({', '.join(label_set.names)}), and `scoring: softmax` scores a softmax over "
            "the classes: one class scores 1 whatever it hears (train accuracy 100 %, an event in every window). "
            "Add clips of the other sounds as a second class (e.g. `other`), or use `scoring: sigmoid` with "
            "`background:` clips of none of the classes, as the demo-distill recipe does"
        )
    if model_config.head["kind"] == "onehot" and model_config.num_classes != len(label_set.labels):
        raise ConfigError(
            f"the one-hot model {config.model} has num_classes {model_config.num_classes}, the recipe's data has "
            f"{len(label_set.labels)} classes: set num_classes to {len(label_set.labels)} in a model config that "
            "extends it (the text-assisted heads need no count)"
        )
    vocabulary = None
    if config.distill is not None:
        train_set, teacher_names = with_teacher(train_set, config)
        vocabulary = vocabulary_label_set(teacher_names, label_set.prompt)
    if config.background is not None and config.background.underlay is not None:
        train_set = Underlay(train_set, config.background.underlay, config.seed)
    if config.overlay is not None:  # items gain a last column: the second sound's class
        train_set = Overlay(train_set, config.overlay, config.seed)
    model = build_model(model_config)
    load_pretrained(model, pretrained_audio or config.pretrained_audio, pretrained_text or config.pretrained_text)
    freeze(model, config)
    scorer = ClassScorer(model, label_set, frozen_text=config.freeze_text, unseen=unseen, scoring=config.scoring,
                         vocabulary=vocabulary).to(device)
    return Run(model, model_config, scorer, train_set, validation, device)


def with_teacher(train_set, config: TrainConfig) -> tuple[WithTeacher, list[str]]:
    """The training set with the AudioSet teacher's score of every clip (cached; train.teacher),
    and the teacher's class names. Synthesised streets (which may hold class sounds) train only
    against the teacher."""
    from train.teacher import dataset_clips, teacher_scores

    scores = teacher_scores(dataset_clips(train_set), config.distill.cache_dir or _cache_path(config, "teacher"))
    unknown, start = set(), 0
    for source in getattr(train_set, "sources", [train_set]):
        if isinstance(source, BackgroundDataset):
            unknown |= {start + i for i, negative in enumerate(source.negative) if not negative}
        start += len(source)
    return WithTeacher(train_set, getattr(scores, config.distill.pool), unknown), scores.class_names


def _cache_path(config: TrainConfig, name: str) -> Path:
    """<train cache>/<name>: under the recipe's cache_dir, else train.data.cache's default."""
    return (Path(config.cache_dir) if config.cache_dir else default_cache_dir()) / name


def build_data(config: TrainConfig, frontend: Frontend) -> tuple[ClipDataset | CombinedDataset, list[Validation],
                                                                  LabelSet, list[int]]:
    """(training set, validation sets, the label space of every dataset's classes, the ids of
    the zero-shot classes that never train)."""
    augment = Augment(config.augment, frontend.sample_rate).train()
    trains, vals, splits, sets = [], [], [], []
    for spec, labels in zip(config.datasets, config.label_specs):
        trains.append(build_dataset(spec, "train", frontend, config.cache_dir, augment, config.seed))
        heard = set(trains[-1].targets)
        empty = [name for k, name in enumerate(trains[-1].class_names) if k not in heard and name not in spec.holdout]
        if empty:  # trained on nothing, recorded as trained: 100 % training accuracy on the others
            raise ConfigError(
                f"{spec.kind} data {spec.root}: {len(empty)} class(es) have no training clip ({', '.join(empty[:5])}"
                f"{', ...' if len(empty) > 5 else ''}: every clip of theirs is held out, or could not be read): the "
                "model would be exported as trained on them; give them training clips, or leave them out of the data"
            )
        splits.append("val" if spec.val_fraction else ("test" if spec.test_folds else None))
        if spec.val_fraction and spec.test_folds:  # one held-out figure per dataset and epoch: the val split's
            log.warning(
                "%s data %s: test_folds %s are held out of training but not scored each epoch (val_fraction %g "
                "is): score them after training with `semanticac-train evaluate --checkpoint RUN/last.pt "
                "--config ... --fold %d`", spec.kind, spec.root, list(spec.test_folds), spec.val_fraction,
                spec.test_folds[0])
        vals.append(build_dataset(spec, splits[-1], frontend, config.cache_dir) if splits[-1] else None)
        if vals[-1] is not None:
            check_held_out(trains[-1].clips, vals[-1].clips, splits[-1], spec.root, spec.val_fraction)
        sets.append(class_label_set(labels, trains[-1].class_names, spec.kind))
    kinds = [s.kind for s in config.datasets]
    if config.background is not None:  # unlabelled clips of none of the classes (target -1)
        bg = config.background
        trains.append(BackgroundDataset(bg.root or _cache_path(config, "background"), bg.count, frontend,
                                        config.cache_dir, augment, config.seed, data_seed=bg.seed))
        kinds.append("background")
    several = len(trains) > 1
    train_set = CombinedDataset(trains, kinds) if several else trains[0]
    validation = [Validation(spec.kind, val, train_set.source_classes(i) if several else None, split=split)
                  for i, (spec, val, split) in enumerate(zip(config.datasets, vals, splits)) if val is not None]
    unseen = []
    for i, spec in enumerate(config.datasets):
        if spec.holdout:
            own = train_set.source_classes(i) if several else list(range(len(train_set.class_names)))
            held, ids = zero_shot_validation(spec, own, frontend, config.cache_dir)
            validation += held
            unseen += ids
    return train_set, validation, merge_label_sets(sets), unseen


def zero_shot_validation(spec: DataSpec, own: list[int], frontend: Frontend,
                         cache_dir: str | None) -> tuple[list[Validation], list[int]]:
    """The held-out classes of `spec` among themselves and among all its classes (`own`: their
    ids in the label space), and the held-out ones' ids."""
    clips, names = split_clips(spec, "heldout")
    ids = [own[names.index(name)] for name in spec.holdout]
    among_unseen = [replace(c, target=spec.holdout.index(names[c.target])) for c in clips]
    return [Validation(f"{spec.kind}_zeroshot", ClipDataset(among_unseen, list(spec.holdout), frontend, cache_dir),
                       ids, picks_best=False),
            Validation(f"{spec.kind}_zeroshot_all", ClipDataset(clips, names, frontend, cache_dir), own,
                       picks_best=False)], ids


def _loader(dataset: ClipDataset, config: TrainConfig, shuffle: bool, epoch: int) -> DataLoader:
    seed = config.seed * 100_003 + epoch  # a new, reproducible permutation every epoch
    if not dist.is_initialized():
        return make_loader(dataset, config.batch_size, shuffle, seed=seed, num_workers=config.num_workers)
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=config.seed, drop_last=False)
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, collate_fn=collate,
                      num_workers=config.num_workers)


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


@contextlib.contextmanager
def distributed():
    """Inside the block, this process is in the process group torchrun set up (WORLD_SIZE > 1):
    NCCL on GPUs, gloo on CPUs. Outside torchrun, or in a group already, it changes nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


class Trainer:
    """What changes while a run trains: the optimiser, its schedule, the history and the best score."""

    def __init__(self, config: TrainConfig, run: Run):
        self.config, self.run = config, run
        self.trainable = run.scorer  # what the forward pass calls: the scorer, or its DDP wrapper
        if dist.is_initialized():
            self.trainable = nn.parallel.DistributedDataParallel(
                run.scorer, device_ids=[run.device.index] if run.device.type == "cuda" else None)
        self.optimizer, self.scheduler = make_optimizer(config, run.scorer)
        self.use_amp = config.amp and run.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.history: list[dict] = []
        self.best = -1.0
        self.start = 0  # the first epoch still to train
        # optim.ema: a copy that follows the trained weights step by step (BatchNorm's statistics too)
        self.averaged = None if config.optim.ema is None else AveragedModel(
            run.scorer, multi_avg_fn=get_ema_multi_avg_fn(config.optim.ema), use_buffers=True)

    @property
    def kept(self) -> ClassScorer:
        """The scorer validated and saved: the weights' moving average (optim.ema), else the trained one."""
        return self.run.scorer if self.averaged is None else self.averaged.module

    def resume(self, path: Path) -> None:
        """Continue from `path` (a last.pt) exactly: weights, optimiser, schedule, RNG and history;
        ConfigError when it was trained with another recipe (only `epochs` may change: a longer run)."""
        if not path.is_file():
            log.warning("--resume: no %s yet (a new run, or a mistyped --out?): starting from scratch", path)
            return
        state = load_checkpoint(path)
        was, now_names = list(state.get("class_names") or []), list(self.run.train_set.class_names)
        trained = ((state.get("training") or {}).get("clips") or {}).get("train")
        if (was and was != now_names) or (trained is not None and trained != len(self.run.train_set)):
            raise ConfigError(
                f"--resume: the data changed since {path} ({len(was)} classes and {trained} training clips then, "
                f"{len(now_names)} and {len(self.run.train_set)} now): a resumed run would mix two datasets under "
                "one history; train the new data in another --out"
            )
        then = {str(Path(d.get("root", "")).resolve()): d.get("sha256") for d in (state.get("training") or {}).get(
            "data") or []}
        # the same clips in the same number, but labels or files swapped
        for spec, now in zip(self.config.datasets, data_facts(self.config)):
            digest, root = now.get("sha256"), now["root"]
            if digest and then.get(root) and then[root] != digest:
                raise ConfigError(
                    f"--resume: {spec.root} changed since {path} (its SHA-256 {then[root][:12]}... then, "
                    f"{digest[:12]}... now): a resumed run would mix two datasets under one history; train the "
                    "new data in another --out, or put the CSV back as it was"
                )
        saved, now = (state.get("training") or {}).get("recipe") or {}, to_dict(self.config)
        changed = sorted(key for key in set(saved) & set(now) if key != "epochs" and saved[key] != now[key])
        if changed:
            raise ConfigError(
                f"--resume: {path} was trained with another recipe ({', '.join(changed)} differ): resume it with "
                "the recipe it was trained with (its `training.recipe`), or start the new one in another --out"
            )
        try:
            self.kept.model.load_state_dict(state["model"])
            if self.averaged is not None:  # the weights it trained on, and how many steps the average has seen
                self.run.scorer.load_state_dict(state["trained"])
                self.averaged.n_averaged.fill_(state["averaged_steps"])
        except RuntimeError as err:
            raise CheckpointError(f"--resume: {path} holds another model's weights: {str(err)[:300]}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if state.get("scaler"):  # AMP's loss scale where it stopped (a fresh one skips its first steps)
            self.scaler.load_state_dict(state["scaler"])
        if self.run.scorer.scoring == "sigmoid":
            self.kept.logit_bias.data.fill_(state["scoring"]["logit_bias"])
        self.history, self.best, self.start = state["history"], state["best"], state["epoch"] + 1
        log.info("resuming %s at epoch %d of %d", path, self.start + 1, self.config.epochs)

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training set, then one step of the schedule: loss, accuracy, and the lr
        it trained at (the schedule's next one is the next epoch's)."""
        run = self.run
        lr = self.optimizer.param_groups[0]["lr"]
        run.scorer.train()
        run.train_set.set_epoch(epoch)
        loader = _loader(run.train_set, self.config, shuffle=True, epoch=epoch)
        total_loss, correct, seen, labelled = 0.0, 0, 0, 0
        bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{self.config.epochs}", disable=not is_main(), leave=False)
        for mel, targets, *extra in bar:
            mel, targets = mel.to(run.device), targets.to(run.device)
            partners = extra.pop().to(run.device) if self.config.overlay is not None else None
            logits, loss = self.step(mel, targets, extra[0].to(run.device) if extra else None, partners)
            total_loss += loss.item() * len(targets)
            has_class = targets >= 0  # background clips have none
            correct += int((logits.argmax(1) == targets)[has_class].sum())
            seen, labelled = seen + len(targets), labelled + int(has_class.sum())
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / max(labelled, 1):.3f}")
        self.scheduler.step()
        return {"loss": total_loss / max(seen, 1), "train_accuracy": correct / max(labelled, 1), "lr": lr}

    def step(self, mel: torch.Tensor, targets: torch.Tensor, teacher: torch.Tensor | None = None,
             partners: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on a batch: (logits, loss). Under AMP the forward runs in fp16, the
        loss in fp32, and the gradients are scaled. `teacher`: the teacher's scores [B, 521];
        `partners`: each clip's second sound (train.data.overlay; negative: none)."""
        model, scorer = self.run.model, self.run.scorer
        with torch.autocast(self.run.device.type, dtype=torch.float16, enabled=self.use_amp):
            logits, audio, classes, *vocabulary = self.trainable(mel, with_vocabulary=teacher is not None)
        if self.config.scoring == "sigmoid":
            loss, _ = sigmoid_loss(logits, scorer.logit_bias, targets, torch.isfinite(scorer.train_mask),
                                   vocabulary[0] if vocabulary else None, teacher,
                                   self.config.distill.weight if self.config.distill else 1.0, partners)
        else:
            loss = loss_of(self.config.loss, logits, audio, classes, targets, model.logit_scale())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        model.logit_scale.clamp_()
        if self.averaged is not None:
            self.averaged.update_parameters(scorer)
        return logits, loss

    def validate(self) -> dict:
        """val_accuracy_<name> of every validation set (the kept weights'); val_accuracy: the mean
        over the val splits, which pick best.pt; test_accuracy: the mean over the test folds,
        reported only (a best.pt chosen on the test fold had shipped its best epoch as a held-out
        figure, 9 points high). With optim.ema the same figures of the trained weights, which the
        average replaces, prefixed trained_."""
        run, record = self.run, {}
        scorers = {"": self.kept} | ({} if self.averaged is None else {"trained_": run.scorer})
        for prefix, scorer in scorers.items():
            for v in run.validation:
                metrics = evaluate(scorer, _loader(v.dataset, self.config, shuffle=False, epoch=0), run.device,
                                   v.classes)
                record[f"{prefix}val_accuracy_{v.name}"] = metrics.accuracy
            for split in ("val", "test"):
                scored = [record[f"{prefix}val_accuracy_{v.name}"] for v in run.validation
                          if v.picks_best and v.split == split]
                if scored:
                    record[f"{prefix}{split}_accuracy"] = float(np.mean(scored))
        return record

    def save(self, out: Path, epoch: int, score: float, facts: dict) -> None:
        """last.pt with all that --resume needs, and best.pt when `score` beats the best so far;
        each written atomically. Call it after the epoch's record is in the history."""
        run, best = self.run, max(self.best, score)
        figures = {"epochs": epoch + 1, f"best_{SCORES[scored_on(self.history[-1])]}": best,
                   **{k: v for k, v in self.history[-1].items() if k.startswith("val_accuracy_")}}
        extra = dict(epoch=epoch, history=self.history, best=best, clip_seconds=run.train_set.clip_seconds,
                     training={**facts, "figures": figures}, license=self.config.license,
                     class_names=list(run.train_set.class_names), scoring=self.kept.scoring_spec())
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []  # DropPath draws on the GPU
        if score > self.best:  # first: a stop between the two leaves last.pt at the epoch before, which --resume redoes
            save_checkpoint(out / "best.pt", self.kept.model, run.model_config, **extra)
        averaging = {} if self.averaged is None else {  # what --resume needs beside the average
            "trained": run.scorer.state_dict(), "averaged_steps": int(self.averaged.n_averaged)}
        save_checkpoint(out / "last.pt", self.kept.model, run.model_config, optimizer=self.optimizer.state_dict(),
                        scheduler=self.scheduler.state_dict(), rng=torch.get_rng_state(), cuda_rng=cuda_rng,
                        scaler=self.scaler.state_dict(), **averaging, **extra)


def _csv_sha256(spec: DataSpec) -> dict:
    """{"sha256": the CSV's} for a CSV dataset (which clips and labels it was), else {}."""
    path = Path(spec.root)
    if spec.kind != "csv" or not path.is_file():
        return {}
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def data_facts(config: TrainConfig) -> list[dict]:
    """Each dataset as a checkpoint records it: its root made absolute (calibrate scores finds its clips by
    it), its split, and a CSV's SHA-256 (--resume compares it)."""
    return [{"kind": spec.kind, "root": str(Path(spec.root).resolve()), "test_folds": list(spec.test_folds),
             "val_fraction": spec.val_fraction, **_csv_sha256(spec)} for spec in config.datasets]


def run_facts(config: TrainConfig, run: Run, command: str) -> dict:
    """How a checkpoint was made (an export's model.json carries it as `training`)."""
    return {"command": command, "recipe": to_dict(config), "version": __version__, "data": data_facts(config),
            "clips": {"train": len(run.train_set), **{f"{v.split}_{v.name}": len(v.dataset) for v in run.validation},
                      "skipped": skipped_clips(run)}}


# What best.pt is chosen by: validation accuracy, or training accuracy for a recipe that holds nothing out.
SCORES = {"validation": "val_accuracy", "training": "train_accuracy"}


def scored_on(record: dict) -> str:
    """What an epoch's record scores the run by: "validation", or "training" without a validation split."""
    return "validation" if "val_accuracy" in record else "training"


STALE_SECONDS = 300.0  # a checkpoint's temporary file untouched this long is a killed run's, not a live write


def check_run_folder(out: Path, resume: bool) -> None:
    """A run folder that can be written, and without a run in it unless `resume`: a run's
    checkpoints are never overwritten by another (ConfigError naming the fix)."""
    problem = unwritable_reason(out)
    if problem is not None:
        raise ConfigError(f"--out {out} cannot hold the run: {problem}: give a folder you can write to")
    held = [name for name in ("last.pt", "best.pt") if (out / name).is_file()]
    # last.pt deleted to save room, or a kill during its first write: --resume would start again and write
    # over best.pt (said first: "--resume continues it" had sent a person to this refusal)
    if held == ["best.pt"]:
        raise ConfigError(
            f"--out {out} holds best.pt but no last.pt, which --resume continues from: a run started there would "
            "overwrite best.pt; move best.pt away or give another --out (nothing was overwritten)"
        )
    if held and not resume:
        raise ConfigError(
            f"--out {out} already holds a run ({', '.join(held)}): --resume continues it; a new run needs "
            "another --out (nothing was overwritten)"
        )
    freed = sum(remove_stale_temporaries(out / name, STALE_SECONDS) for name in ("last.pt", "best.pt"))
    if freed:
        log.info("--out %s: removed the unfinished checkpoint files (%.0f MB) of a run that was killed", out, freed / 1e6)


def fit(config: TrainConfig, out: str | Path, resume: bool = False, pretrained_audio: str | None = None,
        pretrained_text: str | None = None, command: str = "") -> dict:
    """Train `config`; checkpoints go to `out` (last.pt every epoch, best.pt by validation accuracy,
    or by training accuracy for a recipe without a validation split, test folds only reported:
    `scored_on` says which)."""
    out = Path(out)
    made = not out.exists()
    check_run_folder(out, resume)  # before the data is read (it makes the folder)
    try:
        run = prepare(config, pretrained_audio, pretrained_text)
    except BaseException:  # a recipe's data or model refused: no empty run folder left behind
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    trainer = Trainer(config, run)
    if resume:
        trainer.resume(out / "last.pt")
    facts = run_facts(config, run, command)
    if resume and trainer.start >= config.epochs:
        log.warning("--resume: %s has trained %d epoch(s), the recipe asks for %d: nothing to do (--epochs N trains "
                    "on to epoch N)", out / "last.pt", trainer.start, config.epochs)
    for epoch in range(trainer.start, config.epochs):
        started = time.perf_counter()
        trained = trainer.train_epoch(epoch)
        validated = trainer.validate()
        record = {"epoch": epoch + 1, **trained, "seconds": round(time.perf_counter() - started, 2), **validated}
        trainer.history.append(record)
        score = record[SCORES[scored_on(record)]]
        if is_main():
            held = "".join(f", {split} acc {record[f'{split}_accuracy']:.3f}" + (
                f" (trained weights {record[f'trained_{split}_accuracy']:.3f})"
                if f"trained_{split}_accuracy" in record else "") for split in ("val", "test")
                if f"{split}_accuracy" in record)
            epochs_log.info("epoch %d/%d: loss %.4f, train acc %.3f%s (%.0f s)", epoch + 1, config.epochs,
                            record["loss"], record["train_accuracy"], held, record["seconds"])
            trainer.save(out, epoch, score, facts)
        trainer.best = max(trainer.best, score)
    scored = scored_on(trainer.history[-1]) if trainer.history else "training"
    return {"history": trainer.history, "best": trainer.best, "scored_on": scored, "out": str(out),
            "ranks_agree": ranks_agree(run.model), "skipped": skipped_clips(run)}


def skipped_clips(run: Run) -> int:
    """Clips of the recipe's data left out as unreadable (a path mistyped in a CSV: each was warned of)."""
    return sum(len(getattr(data, "skipped", [])) for data in (run.train_set, *(v.dataset for v in run.validation)))


def ranks_agree(model: nn.Module) -> bool | None:
    """Under DDP, whether every process ends with the same weights (None: not distributed)."""
    if not dist.is_initialized():
        return None
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    agree = all(torch.equal(g, gathered[0]) for g in gathered)
    if not agree:
        raise RuntimeError(f"DDP processes disagree after training: weight checksums {[g.item() for g in gathered]}")
    log.info("%d processes agree (weight checksum %.6f)", len(gathered), gathered[0].item())
    return agree
