"""The training loop: length-bucketed mini-batches, AdamW, LR schedule, early stopping on
validation macro-F1, class weighting, clipping, per-epoch atomic checkpoints (written in the
background: `pipeline.checkpoint`) and resume, and an
optional refit on train + validation for the epoch count validation chose.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn
from tqdm.auto import tqdm

from pipeline.checkpoint import CheckpointWriter, load_checkpoint
from pipeline.config import ModelConfig, TrainConfig
from pipeline.errors import NamelangError, NamelangWarning, first_line, typed_first_line
from pipeline.features import SPLIT_NAMES, TRAIN, VALIDATION, TensorData
from pipeline.metrics import macro_f1
from pipeline.model import CharClassifier, combine, predict_logits

EpochCallback = Callable[[dict], None]
# Settings that change how a run is carried out, not the epochs it trains or what its checkpoint holds:
# not part of its identity, so a run may resume under other values.
_NOT_IDENTITY = {"progress", "checkpoint_dir", "keep_checkpoint", "device", "num_threads", "max_seconds",
                 "charlm_counts_validation"}


@dataclass
class TrainResult:
    model: CharClassifier
    history: list[dict]
    best_epoch: int
    best_val_macro_f1: float
    train_seconds: float
    device: str
    checkpoint: Path | None  # None: checkpoints were off
    stopped_early: bool = False       # patience ran out on validation
    resumed_from_epoch: int | None = None
    label_names: list[str] = field(default_factory=list)
    refit_epochs: int | None = None   # set when the model returned was refit on train + validation
    refit_seconds: float = 0.0        # part of train_seconds
    stopped_by_budget: bool = False   # `max_seconds` ran out (a resume without that budget goes on)
    # the splits the returned counted models (n-gram and letter models) counted (None: it has none)
    ngram_models_counted: str | None = None

    @property
    def stopped_by(self) -> str:
        """What ended training: `patience`, `time budget` or `epochs` (the last one ran)."""
        return "time budget" if self.stopped_by_budget else "patience" if self.stopped_early else "epochs"


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise NamelangError("device 'cuda' asked for, but no CUDA GPU is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def usable_cores() -> int:
    """The cores this process may run on (a container's or taskset's share), not the host's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def run_key(data: TensorData, model_cfg: ModelConfig, train_cfg: TrainConfig) -> str:
    """Identity of a training run: data, model and optimisation settings (not where or how fast)."""
    ident = {"data": data.sha256, "model": model_cfg.model_dump(),
             "train": train_cfg.model_dump(exclude=_NOT_IDENTITY, mode="json")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def length_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Batches of similar length (less padding), in random order; ties broken at random."""
    jitter = torch.rand(len(lengths), generator=generator)
    order = torch.argsort(lengths.double() + jitter)
    batches = list(order.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def class_weights(counts: torch.Tensor, power: float = 0.5) -> torch.Tensor:
    """Frequency^-power, mean 1 (power 0.5: lifts rare languages without drowning the common ones;
    1: "balanced", every language counts the same in the loss)."""
    w = counts.float().clamp(min=1).pow(-power)
    return w / w.mean()


def split_metrics(model: nn.Module, data: TensorData, side: int, weight: torch.Tensor | None = None) -> dict:
    idx = data.indices(side)
    if len(idx) == 0:
        return {}
    return logit_metrics(predict_logits(model, data.tokens[idx], data.lengths[idx], data.marks_at(idx)),
                         data.labels[idx], weight)


def logit_metrics(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> dict:
    pred = logits.argmax(1)
    return {
        "loss": float(nn.functional.cross_entropy(logits, y, weight=weight)),
        "acc": float((pred == y).float().mean()),
        "macro_f1": macro_f1(y.numpy(), pred.numpy()),
    }


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = max(cfg.epochs * steps_per_epoch, 1)
    if cfg.lr_schedule == "onecycle":
        warm_up = 0.2
        if abs(warm_up * total - 1) < 1e-9:  # OneCycleLR divides by its warm-up steps less one: 5 steps in all
            warm_up = 0.3
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.learning_rate, total_steps=total,
                                                   pct_start=warm_up)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


_BF16_FAILED: set[str] = set()  # devices where bf16 autocast raised once: stay in float32 there


def _step_gradients(model: CharClassifier, loss_fn: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                    n: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and logits of one batch, its gradients in place; on CUDA under bf16 autocast, falling back
    to float32 if a kernel (e.g. a cuDNN RNN without bf16 support) refuses it, forward or backward."""
    autocast = device.type == "cuda" and str(device) not in _BF16_FAILED
    optimizer.zero_grad(set_to_none=True)
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            outputs = model.member_logits(x, n)
            loss = torch.stack([loss_fn(z.float(), y) for z in outputs]).mean()
        loss.backward()  # outside autocast, as PyTorch advises; its kernels follow the forward's dtypes
        return loss, combine(outputs)
    except RuntimeError as exc:
        if not autocast or isinstance(exc, torch.cuda.OutOfMemoryError):
            raise  # out of memory is not a bf16 problem: float32 would need more
        warnings.warn(f"bf16 autocast failed on {device} ({first_line(exc)}); training in float32",
                      NamelangWarning, stacklevel=2)
        _BF16_FAILED.add(str(device))
        return _step_gradients(model, loss_fn, optimizer, x, n, y, device)


def _train_epoch(setup: _Setup, tokens: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor,
                 cfg: TrainConfig, device: torch.device) -> tuple[float, float]:
    """One pass over the rows given; (mean loss, accuracy) as seen during training."""
    model, _, _, loss_fn, optimizer, scheduler = setup
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for batch in length_batches(lengths, cfg.batch_size, setup.generator):
        width = int(lengths[batch].max())
        x, n, y = tokens[batch, :width].to(device), lengths[batch], labels[batch].to(device)
        loss, logits = _step_gradients(model, loss_fn, optimizer, x, n, y, device)
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        loss_sum += float(loss.detach()) * len(batch)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(batch)
    return loss_sum / seen, correct / seen


def _rows(data: TensorData, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens, lengths and labels of the rows `idx`."""
    return data.tokens[idx], data.lengths[idx], data.labels[idx]


class _Setup(NamedTuple):
    model: CharClassifier
    generator: torch.Generator  # the batch order's
    weight: torch.Tensor | None  # per class, also for the validation loss
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def _setup(model_cfg: ModelConfig, train_cfg: TrainConfig, data: TensorData, idx: torch.Tensor,
           counts: torch.Tensor, device: torch.device) -> _Setup:
    """Seeded model, batch-order generator, weighted loss, optimizer and schedule for training on `idx`."""
    torch.manual_seed(train_cfg.seed)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    model = CharClassifier(model_cfg, len(data.label_names)).to(device)
    model.fit_counts(*_rows(data, idx), data.marks_at(idx))
    weight = class_weights(counts, train_cfg.class_weight_power) if train_cfg.class_weighting else None
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None,
                                  label_smoothing=train_cfg.label_smoothing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.learning_rate,
                                  weight_decay=train_cfg.weight_decay)
    scheduler = _scheduler(optimizer, train_cfg, -(-len(idx) // train_cfg.batch_size))
    return _Setup(model, generator, weight, loss_fn, optimizer, scheduler)


def refit(data: TensorData, model_cfg: ModelConfig, train_cfg: TrainConfig, epochs: int,
          device: torch.device | None = None) -> CharClassifier:
    """Train from scratch on train + validation for `epochs` epochs: same seed, same per-epoch LR
    schedule (over `train_cfg.epochs`) and class weighting as the first phase, only more rows."""
    device = device or resolve_device(train_cfg.device)
    idx = data.indices(TRAIN, VALIDATION)
    setup = _setup(model_cfg, train_cfg, data, idx, data.class_counts(TRAIN, VALIDATION), device)
    rows = _rows(data, idx)
    for _ in range(epochs):
        _train_epoch(setup, *rows, train_cfg, device)
    return setup.model.eval()


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """PyTorch's CPU threads set to `count` (None: left as they are) within the block, and the caller's
    count given back after: training sets its own; `train.num_threads` wraps a whole run with it, so
    that evaluation and the promotion gate follow `--threads` too."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_model(data: TensorData, model_cfg: ModelConfig, train_cfg: TrainConfig,
                on_epoch: EpochCallback | None = None, resume: bool = False,
                extra_metrics: Callable[[nn.Module], dict] | None = None,
                on_resume: Callable[[int], None] | None = None) -> TrainResult:
    """Train on the train split, early-stop on validation macro-F1, return the best weights
    (or, with `refit_on_train_and_validation`, a model retrained on train + validation for the
    best epoch count; `best_val_macro_f1` and `history` stay those of the first phase). With
    `charlm_counts_validation`, the returned model's n-gram models have also counted the validation
    names; the validation figures reported are those measured before, with train-only counts.

    `on_epoch(record)` is called after every epoch with that epoch's figures, while its checkpoint is
    written in the background (complete on disk once this function returns or raises); on resume it
    is first called with each epoch trained before the interruption; `on_resume(epoch)`, if given, is
    called once a checkpoint has been loaded, before those replayed epochs (so a log says so up front);
    `extra_metrics(model)`, if given, adds to the record (e.g. test accuracy for a benchmark's
    learning curve) and its time is kept off the training clock.
    """
    device = resolve_device(train_cfg.device)
    with cpu_threads((train_cfg.num_threads or usable_cores()) if device.type == "cpu" else None):
        return _train(data, model_cfg, train_cfg, device, on_epoch, resume, extra_metrics, on_resume)


def _train(data: TensorData, model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device,
           on_epoch: EpochCallback | None, resume: bool, extra_metrics: Callable[[nn.Module], dict] | None,
           on_resume: Callable[[int], None] | None) -> TrainResult:
    train_idx = data.indices(TRAIN)
    if len(train_idx) == 0:
        raise NamelangError("the train split is empty")
    t_setup = time.perf_counter()  # building the model counts its n-gram language models: on the clock
    setup = _setup(model_cfg, train_cfg, data, train_idx, data.class_counts(TRAIN), device)
    model = setup.model
    has_validation = len(data.indices(VALIDATION)) > 0
    checkpoint = checkpoint_path(data, model_cfg, train_cfg)
    state = _fresh_state(elapsed=time.perf_counter() - t_setup)
    best_state = copy.deepcopy(model.state_dict())
    refit_state = resumed_from = None
    if resume:
        restored = _resume(checkpoint, setup, device, train_cfg, on_epoch, on_resume)
        if restored is not None:
            state, best_state, refit_state = restored
            resumed_from = state["epoch"]

    validate = _validator(model, data, setup.weight)
    rows = _rows(data, train_idx)
    started = time.perf_counter() - state["elapsed"]
    bar = tqdm(total=train_cfg.epochs, initial=state["epoch"], desc="train", unit="epoch",
               disable=None if train_cfg.progress else True, leave=False)  # None: on a terminal only
    with CheckpointWriter(checkpoint) as writer, bar:
        while not state["finished"] and state["epoch"] < train_cfg.epochs:
            t0 = time.perf_counter()
            train_loss, train_acc = _train_epoch(setup, *rows, train_cfg, device)
            val, network_val = validate()
            record = {"epoch": state["epoch"] + 1, "train_loss": train_loss, "train_acc": train_acc,
                      "val_loss": val.get("loss"), "val_acc": val.get("acc"), "val_macro_f1": val.get("macro_f1"),
                      "val_network_macro_f1": network_val.get("macro_f1"),
                      "lr": setup.optimizer.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - t0}
            if extra_metrics is not None:
                t_extra = time.perf_counter()
                record.update(extra_metrics(model))
                model.train()
                started += time.perf_counter() - t_extra  # off the clock
            record["elapsed_s"] = time.perf_counter() - started
            score = network_val["macro_f1"] if has_validation else -record["train_loss"]
            if _record_epoch(state, record, score, train_cfg, has_validation):
                best_state = copy.deepcopy(model.state_dict())
            writer.save(_checkpoint_state(setup, state), best_state)
            bar.update(1)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}",
                            val_f1=f"{val.get('macro_f1', float('nan')):.3f}")
            if on_epoch is not None:
                on_epoch(record)
        refit_epochs, counted = _final_weights(setup, state, best_state, refit_state, data, model_cfg, train_cfg,
                                               device, writer)
    model.eval()
    # the whole model's validation macro-F1 at the epoch kept (no validation rows: no F1 to report)
    best_val_macro_f1 = (state["history"][state["best_epoch"] - 1]["val_macro_f1"]
                         if has_validation and state["best_epoch"] else float("nan"))
    return TrainResult(model, state["history"], state["best_epoch"], best_val_macro_f1, state["elapsed"],
                       str(device), checkpoint, state.get("stopped_early", False), resumed_from,
                       list(data.label_names), refit_epochs, state.get("refit_seconds", 0.0),
                       state.get("stopped_by_budget", False),
                       " + ".join(SPLIT_NAMES[side] for side in counted)
                       if model.charlm is not None or model.marks is not None else None)


def _resume(checkpoint: Path | None, setup: _Setup, device: torch.device, train_cfg: TrainConfig,
            on_epoch: EpochCallback | None, on_resume: Callable[[int], None] | None
            ) -> tuple[dict, dict, dict | None] | None:
    """`_restore` the run's checkpoint, replaying its epochs to `on_epoch`, e.g. for a new tracking run's
    curves; None, with a warning, when there is none to resume."""
    if checkpoint is None or not checkpoint.exists():
        why = ("checkpoints are off (train.checkpoint_dir is None)" if checkpoint is None else
               f"no checkpoint {checkpoint} for this data and these settings (another setting, other data or "
               "another namelang version makes another)")
        warnings.warn(f"nothing to resume: {why}; training from the start", NamelangWarning, stacklevel=4)
        return None
    state, best_state, refit_state = _restore(checkpoint, setup, device)
    if on_resume is not None:
        on_resume(state["epoch"])
    if state.get("stopped_by_budget") and (train_cfg.max_seconds is None or state["elapsed"] < train_cfg.max_seconds):
        state.update(finished=False, stopped_by_budget=False)  # a time budget stop, now lifted: go on
        refit_state = None  # a refit made at the budget stop is for an epoch count that may change
    if on_epoch is not None:
        for record in state["history"]:
            on_epoch(record)
    return state, best_state, refit_state


def checkpoint_path(data: TensorData, model_cfg: ModelConfig, train_cfg: TrainConfig) -> Path | None:
    """Where a run of this data and these settings keeps its per-epoch checkpoint; None when off."""
    if train_cfg.checkpoint_dir is None:
        return None
    return Path(train_cfg.checkpoint_dir) / f"train-{run_key(data, model_cfg, train_cfg)}.pt"


def _fresh_state(elapsed: float) -> dict:
    """A run's progress before its first epoch, as a checkpoint keeps it (best_f1: the best score so far,
    the network's validation macro-F1; without validation rows, minus the train loss)."""
    return {"epoch": 0, "best_f1": float("-inf"), "best_epoch": 0, "bad_epochs": 0, "history": [],
            "elapsed": elapsed, "finished": False}


_STATE_KEYS = frozenset(_fresh_state(0.0))  # what a checkpoint's progress must hold


def _restore(checkpoint: Path, setup: _Setup, device: torch.device) -> tuple[dict, dict, dict | None]:
    """Load a checkpoint into the model, optimizer, schedule and random generators; return its
    progress state, best weights and refit weights (if any)."""
    saved = load_checkpoint(checkpoint)
    try:
        setup.model.load_state_dict(saved["best_state"])  # fits too (else training ended in its error)
        setup.model.load_state_dict(saved["model"])
        setup.optimizer.load_state_dict(saved["optimizer"])
        setup.scheduler.load_state_dict(saved["scheduler"])
        best_state = saved["best_state"]
        torch.set_rng_state(saved["torch_rng"])
        setup.generator.set_state(saved["batch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)  # the training device's alone
        state = saved["state"]
        if missing := _STATE_KEYS - state.keys():
            raise KeyError(f"its progress lacks {sorted(missing)}")
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise NamelangError(f"checkpoint does not match this model or version ({typed_first_line(exc)}); "
                            "delete it or train without --resume", checkpoint) from exc
    return state, best_state, saved.get("refit_state")


def _record_epoch(state: dict, record: dict, score: float, cfg: TrainConfig, has_validation: bool) -> bool:
    """Add an epoch to the progress state and decide whether training stops (patience ran out, or
    the time budget); whether it is the best epoch so far."""
    state["history"].append(record)
    improved = score > state["best_f1"]
    if improved:
        state.update(best_f1=score, best_epoch=record["epoch"], bad_epochs=0)
    else:
        state["bad_epochs"] += 1
    state["epoch"] = record["epoch"]
    state["elapsed"] = record["elapsed_s"]
    if has_validation and state["bad_epochs"] >= cfg.patience:
        state["finished"], state["stopped_early"] = True, True
    # a budget spent by the last epoch stopped nothing (it kept the checkpoint for a --resume with nothing to train)
    if (cfg.max_seconds and state["elapsed"] >= cfg.max_seconds and not state["finished"]
            and state["epoch"] < cfg.epochs):
        state["finished"], state["stopped_by_budget"] = True, True
    return improved


def _final_weights(setup: _Setup, state: dict, best_state: dict, refit_state: dict | None, data: TensorData,
                   model_cfg: ModelConfig, train_cfg: TrainConfig, device: torch.device,
                   writer: CheckpointWriter) -> tuple[int | None, tuple[int, ...]]:
    """Put the weights to return into the model: the best epoch's, or a refit on train + validation
    for that many epochs; let the n-gram models count the validation names when so configured.
    Returns the refit's epoch count (None: no refit) and the splits the n-gram models counted."""
    model = setup.model
    has_validation = len(data.indices(VALIDATION)) > 0
    refitting = train_cfg.refit_on_train_and_validation and has_validation and state["best_epoch"] > 0
    # where the first phase stopped (last epoch's weights, RNG before a refit reseeds it), for the
    # checkpoint written after the refit: a resume that lifts a time budget trains on from there
    stopped_at = copy.deepcopy(_checkpoint_state(setup, state)) if refitting and refit_state is None else None
    model.load_state_dict(best_state)
    if refitting:
        if refit_state is None:  # not refit yet (or interrupted while refitting): a deterministic redo
            t0 = time.perf_counter()
            refit_state = refit(data, model_cfg, train_cfg, state["best_epoch"], device).state_dict()
            state["refit_seconds"] = time.perf_counter() - t0
            state["elapsed"] += state["refit_seconds"]
            writer.save({**stopped_at, "state": copy.deepcopy(state), "refit_state": refit_state}, best_state)
        model.load_state_dict(refit_state)
        return state["best_epoch"], (TRAIN, VALIDATION)
    if train_cfg.charlm_counts_validation and has_validation:
        t0 = time.perf_counter()
        both = data.indices(TRAIN, VALIDATION)
        model.fit_counts(*_rows(data, both), data.marks_at(both))
        state["elapsed"] += time.perf_counter() - t0
        return None, (TRAIN, VALIDATION)
    return None, (TRAIN,)


def _validator(model: CharClassifier, data: TensorData, weight: torch.Tensor | None
               ) -> Callable[[], tuple[dict, dict]]:
    """Per-epoch validation figures of the whole model and of the network alone (what early stopping
    judges), from one pass of the network: the n-gram and letter models are fixed counts, scored once."""
    idx = data.indices(VALIDATION)
    if len(idx) == 0:
        return lambda: ({}, {})
    tokens, lengths, y = _rows(data, idx)
    marks = data.marks_at(idx)
    device = next(model.parameters()).device
    charlm_scores = letter_scores = None
    with torch.no_grad():
        if model.charlm is not None:
            charlm_scores = model.charlm(tokens.to(device), lengths).float().cpu()
        if model.marks is not None and model.marks.fitted and marks is not None:
            letter_scores = model.marks(marks.to(device)).float().cpu()

    def validate() -> tuple[dict, dict]:
        with model.network_only():
            network_logits = predict_logits(model, tokens, lengths)
        network = logit_metrics(network_logits, y, weight)
        if charlm_scores is None and letter_scores is None:
            return network, network
        return logit_metrics(model.mix(network_logits, charlm_scores, letter_scores), y, weight), network

    return validate


def _checkpoint_state(setup: _Setup, state: dict) -> dict:
    """Everything a resumed run needs, but the best weights (`CheckpointWriter.save` adds those)."""
    # the training device's generator only: one per visible GPU would not load where fewer are visible
    device = next(setup.model.parameters()).device
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"model": setup.model.state_dict(), "optimizer": setup.optimizer.state_dict(),
            "scheduler": setup.scheduler.state_dict(), "state": state, "torch_rng": torch.get_rng_state(),
            "batch_rng": setup.generator.get_state(), "cuda_rng": cuda_rng, "refit_state": None}
