"""The training loop: length-bucketed mini-batches, AdamW, LR schedule, early stopping on
validation macro-F1, class weighting, clipping, per-epoch atomic checkpoints and resume.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from pipeline.atomic import atomic_path
from pipeline.config import ModelConfig, TrainConfig
from pipeline.errors import NamelangError
from pipeline.features import TRAIN, VALIDATION, TensorData
from pipeline.model import CharClassifier, combine

EpochCallback = Callable[[dict], None]
# Settings that change how a run is carried out, not what it computes: not part of its identity.
_NOT_IDENTITY = {"progress", "checkpoint_dir", "device", "num_threads", "max_seconds"}


@dataclass
class TrainResult:
    model: CharClassifier
    history: list[dict]
    best_epoch: int
    best_val_macro_f1: float
    train_seconds: float
    device: str
    checkpoint: Path
    stopped_early: bool = False
    resumed_from_epoch: int | None = None
    label_names: list[str] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise NamelangError("device 'cuda' asked for, but no CUDA GPU is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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


@torch.no_grad()
def predict_logits(model: nn.Module, tokens: torch.Tensor, lengths: torch.Tensor,
                   batch_size: int = 2048) -> torch.Tensor:
    """Logits for many names at once, on the model's device, returned on CPU in input order."""
    model.eval()
    device = next(model.parameters()).device
    order = torch.argsort(lengths)
    out = torch.empty(len(lengths), model.head.out_features)
    for chunk in order.split(batch_size):
        width = int(lengths[chunk].max().clamp(min=1))
        out[chunk] = model(tokens[chunk, :width].to(device), lengths[chunk]).float().cpu()
    return out


def split_metrics(model: nn.Module, data: TensorData, side: int, weight: torch.Tensor | None = None) -> dict:
    idx = data.indices(side)
    if len(idx) == 0:
        return {}
    logits = predict_logits(model, data.tokens[idx], data.lengths[idx])
    y = data.labels[idx]
    pred = logits.argmax(1)
    return {
        "loss": float(nn.functional.cross_entropy(logits, y, weight=weight)),
        "acc": float((pred == y).float().mean()),
        "macro_f1": float(f1_score(y.numpy(), pred.numpy(), average="macro", labels=np.unique(y.numpy()),
                                   zero_division=0)),
    }


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    total = max(cfg.epochs * steps_per_epoch, 1)
    if cfg.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.learning_rate, total_steps=total,
                                                   pct_start=0.2)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a truncated or foreign file fails in many ways inside torch
        raise NamelangError(f"checkpoint is corrupt or unreadable ({type(exc).__name__}: {exc}); delete it "
                            "or train without --resume", path) from exc


def train_model(data: TensorData, model_cfg: ModelConfig, train_cfg: TrainConfig,
                on_epoch: EpochCallback | None = None, resume: bool = False,
                extra_metrics: Callable[[nn.Module], dict] | None = None) -> TrainResult:
    """Train on the train split, early-stop on validation macro-F1, return the best weights.

    `on_epoch(record)` is called after every epoch (and its checkpoint) with that epoch's figures;
    `extra_metrics(model)`, if given, adds to the record (e.g. test accuracy for a benchmark's
    learning curve) and its time is kept off the training clock.
    """
    device = resolve_device(train_cfg.device)
    if device.type == "cpu":
        torch.set_num_threads(train_cfg.num_threads or os.cpu_count() or 1)
    torch.manual_seed(train_cfg.seed)
    generator = torch.Generator().manual_seed(train_cfg.seed)
    model = CharClassifier(model_cfg, len(data.label_names)).to(device)
    train_idx = data.indices(TRAIN)
    if len(train_idx) == 0:
        raise NamelangError("the train split is empty")
    counts = data.class_counts(TRAIN)
    weight = class_weights(counts, train_cfg.class_weight_power) if train_cfg.class_weighting else None
    loss_fn = nn.CrossEntropyLoss(weight=weight.to(device) if weight is not None else None,
                                  label_smoothing=train_cfg.label_smoothing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.learning_rate,
                                  weight_decay=train_cfg.weight_decay)
    steps_per_epoch = -(-len(train_idx) // train_cfg.batch_size)
    scheduler = _scheduler(optimizer, train_cfg, steps_per_epoch)
    has_validation = len(data.indices(VALIDATION)) > 0
    autocast = device.type == "cuda"

    key = run_key(data, model_cfg, train_cfg)
    checkpoint = Path(train_cfg.checkpoint_dir) / f"train-{key}.pt"
    state = {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "elapsed": 0.0,
             "finished": False}
    best_state = copy.deepcopy(model.state_dict())
    resumed_from = None
    if resume and checkpoint.exists():
        saved = load_checkpoint(checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        best_state = saved["best_state"]
        torch.set_rng_state(saved["torch_rng"])
        generator.set_state(saved["batch_rng"])
        state = saved["state"]
        resumed_from = state["epoch"]

    tokens, lengths, labels = data.tokens[train_idx], data.lengths[train_idx], data.labels[train_idx]
    started = time.perf_counter() - state["elapsed"]
    bar = tqdm(total=train_cfg.epochs, initial=state["epoch"], desc="train", unit="epoch",
               disable=not train_cfg.progress, leave=False)
    try:
        while not state["finished"] and state["epoch"] < train_cfg.epochs:
            epoch = state["epoch"] + 1
            model.train()
            t0 = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            for batch in length_batches(lengths, train_cfg.batch_size, generator):
                width = int(lengths[batch].max())
                x, n, y = tokens[batch, :width].to(device), lengths[batch], labels[batch].to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    outputs = model.member_logits(x, n)
                    loss = torch.stack([loss_fn(z.float(), y) for z in outputs]).mean()
                    logits = combine(outputs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), train_cfg.clip_grad_norm)
                optimizer.step()
                scheduler.step()
                loss_sum += float(loss.detach()) * len(batch)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(batch)
            val = split_metrics(model, data, VALIDATION, weight)
            record = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                      "val_loss": val.get("loss"), "val_acc": val.get("acc"), "val_macro_f1": val.get("macro_f1"),
                      "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - t0}
            if extra_metrics is not None:
                t_extra = time.perf_counter()
                record.update(extra_metrics(model))
                model.train()
                started += time.perf_counter() - t_extra  # off the clock
            record["elapsed_s"] = time.perf_counter() - started
            state["history"].append(record)
            score = val["macro_f1"] if has_validation else -record["train_loss"]
            if score > state["best_f1"]:
                state.update(best_f1=score, best_epoch=epoch, bad_epochs=0)
                best_state = copy.deepcopy(model.state_dict())
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            state["elapsed"] = record["elapsed_s"]
            if has_validation and state["bad_epochs"] >= train_cfg.patience:
                state["finished"], state["stopped_early"] = True, True
            if train_cfg.max_seconds and state["elapsed"] >= train_cfg.max_seconds:
                state["finished"] = True
            _save_checkpoint(checkpoint, model, optimizer, scheduler, best_state, state, generator)
            bar.update(1)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", acc=f"{record['train_acc']:.3f}",
                            val_f1=f"{val.get('macro_f1', float('nan')):.3f}")
            if on_epoch is not None:
                on_epoch(record)
    finally:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, state["history"], state["best_epoch"], state["best_f1"], state["elapsed"],
                       str(device), checkpoint, state.get("stopped_early", False), resumed_from,
                       list(data.label_names))


def _save_checkpoint(path: Path, model, optimizer, scheduler, best_state, state, generator) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "best_state": best_state, "state": state,
                    "torch_rng": torch.get_rng_state(), "batch_rng": generator.get_state()}, tmp)


def describe_device(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name()}, bf16 autocast)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f"cpu ({torch.get_num_threads()} threads)"
