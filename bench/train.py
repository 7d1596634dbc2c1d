"""Benchmark: the notebook's method vs a char n-gram baseline vs our default model.

    .venv/bin/python bench/train.py [--source DIR] [--seed-budget-s 135] [--seed-epochs 27]
                                    [--split-seed 2024] [--train-seed 2024]

--split-seed and --train-seed change the split and (c)'s training seed from their defaults (2024
both), to see how much the margins move with them (README: four split seeds, three training seeds);
the official figures are the defaults'. With a short --seed-budget-s, such a run takes about a minute.

All three run in one process on the same leakage-free split (by distinct name, stratified,
70/15/15; test rows are distinct (name, language) pairs):

(a) seed    - a faithful re-implementation of the tutorial's method: one-hot input, nn.RNN(58, 128)
              reading a name one character tensor at a time (seq, 1, 58), last hidden state, linear,
              LogSoftmax; trained as the notebook does: batches of 64 names fed one at a time,
              summed NLLLoss, backward, clip_grad_norm_(3), SGD lr 0.15, 27 epochs or until
              --seed-budget-s runs out (checked after each batch);
(b) ngram   - TF-IDF char_wb 1-4 grams + logistic regression, C x class_weight chosen on validation
              macro-F1, then refit on train + validation as (c)'s n-gram models count validation
              names too (bench/ngram.py); train_s is that refit; the train-only fit is printed too;
(c) default - `train_model` with the default ModelConfig / TrainConfig (a BiGRU with a hashed n-gram
              branch, averaged with per-language Kneser-Ney n-gram models; train_s includes counting
              those): early stopping on the network's validation macro-F1, best weights restored,
              then the validation names counted into the n-gram models (with
              `train.refit_on_train_and_validation` the whole model is instead refit on train +
              validation; train_s and epochs would cover both phases).
For reference, also the same n-gram pipeline with scikit-learn's defaults (C=1, no class weights):
the issue names the two components without settings; (b), tuned on validation, is the fair bar.
And (b) once more, grid and refit alike, on the names as spelt in their files ("Jäger", not "Jager"):
(b) and (c)'s network read the ASCII names the notebook's normalization makes, while (c)'s letter
model reads the accents too, so this row shows what the same information is worth to the baseline.

speedup_to_seed_acc = seconds (a) trained until its test accuracy first reached its final value /
seconds (c) trained until its test accuracy first reached that value; both evaluated after every
epoch, off the clock ((c) through train_model's callback, on the first phase's curve: the refit
model exists only at the end). A budget that ends (a) mid-epoch counts that epoch's share.
Targets: (c) >= (b) + 3 points accuracy and + 0.05 macro-F1; speedup >= 3. The margins over (b)
come with 95% paired bootstrap intervals over the test rows (scipy.stats.bootstrap, BCa): how much
one split's figure could move with the names it drew.

The last line of output is one JSON object:
{"seed": {...}, "ngram": {...}, "default": {...}, "speedup_to_seed_acc": x}
with train_s, acc, macro_f1, names_per_s in each inner object, and margin_over_ngram_ci95:
{"acc": [low, high], "macro_f1": [low, high]}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import bootstrap

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pipeline  # noqa: E402, F401 - first: it sets PyTorch's thread spinning, as the product runs

# isort: split
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.ngram import benchmark_row, fit_ngram, make_model, scores, texts  # noqa: E402
from pipeline.config import DataConfig, ModelConfig, SplitConfig, TrainConfig  # noqa: E402
from pipeline.features import ALPHABET, TEST, TRAIN, TensorData, build_tensors  # noqa: E402
from pipeline.model import predict_logits  # noqa: E402
from pipeline.train import split_metrics, train_model  # noqa: E402

SHARED_NAMES = ROOT.parent / "shared" / "data" / "names"


def load_data(source: str | None = None, split_seed: int = SplitConfig().seed) -> TensorData:
    """Ingest, normalize and split the names (scratch folders in a temp dir)."""
    from pipeline.ingest import ingest
    from pipeline.normalize import normalize

    source = source or (str(SHARED_NAMES) if SHARED_NAMES.exists() else DataConfig().source)
    with tempfile.TemporaryDirectory() as tmp:
        table = normalize(ingest(DataConfig(source=source, raw_dir=Path(tmp) / "raw",
                                            processed_dir=Path(tmp) / "processed")))
    return build_tensors(table.names, table.sha256, SplitConfig(seed=split_seed))


# --- (a) the notebook's method --------------------------------------------------------------

class NotebookCharRNN(nn.Module):
    """The tutorial's CharRNN, verbatim: nn.RNN over (seq, 1, 58) one-hot, h2o on hidden[0]."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, line_tensor: torch.Tensor) -> torch.Tensor:
        _, hidden = self.rnn(line_tensor)
        return self.softmax(self.h2o(hidden[0]))


def line_tensors(data: TensorData, idx: torch.Tensor) -> list[torch.Tensor]:
    """The notebook's lineToTensor for each name: a (len, 1, 58) one-hot tensor."""
    eye = torch.eye(len(ALPHABET))
    out = []
    for i in idx.tolist():
        n = max(int(data.lengths[i]), 1)
        out.append(eye[data.tokens[i, :n].long().clamp(min=1) - 1].unsqueeze(1))
    return out


def seed_predict(model: nn.Module, lines: list[torch.Tensor]) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.array([int(model(t).argmax(1)) for t in lines])


def run_seed(data: TensorData, budget_s: float, epochs: int, seed: int = 2024) -> dict:
    """The notebook's training loop, one name at a time inside batches of 64."""
    torch.manual_seed(seed)
    random.seed(seed)
    train_idx = data.indices(TRAIN)
    train_lines = line_tensors(data, train_idx)
    train_labels = [data.labels[i].view(1) for i in train_idx.tolist()]
    test_idx = data.indices(TEST)
    test_lines, test_y = line_tensors(data, test_idx), data.labels[test_idx].numpy()
    model = NotebookCharRNN(len(ALPHABET), 128, len(data.label_names))
    criterion = nn.NLLLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.15)
    n_batch_size = 64
    trained, done_epochs, out_of_time = 0.0, 0.0, False
    curve: list[tuple[float, float]] = []  # (training seconds so far, test accuracy) per epoch, as for (c)
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        batches = list(range(len(train_lines)))
        random.shuffle(batches)
        batches = np.array_split(batches, len(batches) // n_batch_size)
        done = 0  # batches of this epoch trained
        for batch in batches:
            batch_loss = 0
            for i in batch:
                output = model(train_lines[i])
                batch_loss = batch_loss + criterion(output, train_labels[i])
            batch_loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 3)
            optimizer.step()
            optimizer.zero_grad()
            done += 1
            if trained + time.perf_counter() - t0 >= budget_s:
                out_of_time = True
                break
        trained += time.perf_counter() - t0
        done_epochs += done / len(batches)  # a budget's last epoch counts for the share of it trained
        curve.append((trained, scores(test_y, seed_predict(model, test_lines))["acc"]))  # off the clock
        print(f"  seed epoch {done_epochs:.2f}: {trained:.1f}s test acc {curve[-1][1]:.3f}", flush=True)
        if out_of_time:
            break
    t0 = time.perf_counter()
    pred = seed_predict(model, test_lines)
    predict_s = time.perf_counter() - t0
    return {"train_s": trained, "epochs": round(done_epochs, 2), "s_per_epoch": trained / max(done_epochs, 1e-9),
            **scores(test_y, pred), "names_per_s": len(test_lines) / predict_s, "curve": curve}


# --- (c) the default model ----------------------------------------------------------------

def run_default(data: TensorData, checkpoint_dir: Path, train_seed: int = TrainConfig().seed) -> dict:
    model_cfg = ModelConfig()
    train_cfg = TrainConfig(checkpoint_dir=checkpoint_dir, progress=False, seed=train_seed)
    curve: list[tuple[float, float]] = []  # (training seconds so far, test accuracy) per epoch

    def on_epoch(record: dict) -> None:
        curve.append((record["elapsed_s"], record["test_acc"]))
        print(f"  default epoch {record['epoch']}: {record['elapsed_s']:.1f}s val macro-F1 "
              f"{record['val_macro_f1']:.3f} test acc {record['test_acc']:.3f}", flush=True)

    result = train_model(data, model_cfg, train_cfg, on_epoch=on_epoch,
                         extra_metrics=lambda model: {"test_acc": split_metrics(model, data, TEST)["acc"]})
    test = split_metrics(result.model, data, TEST)
    idx = data.indices(TEST)
    tokens, lengths, marks = data.tokens[idx], data.lengths[idx], data.marks_at(idx)
    predict_logits(result.model, tokens[:64], lengths[:64], None if marks is None else marks[:64])  # warm-up
    t0 = time.perf_counter()
    pred = predict_logits(result.model, tokens, lengths, marks).argmax(1).numpy()
    predict_s = time.perf_counter() - t0
    epochs = len(result.history) + (result.refit_epochs or 0)
    if result.refit_epochs:
        print(f"  default refit on train + validation: {result.refit_epochs} epochs, "
              f"{result.refit_seconds:.1f}s", flush=True)
    return {"train_s": result.train_seconds, "epochs": epochs, "s_per_epoch": result.train_seconds / epochs,
            "acc": test["acc"], "macro_f1": test["macro_f1"], "names_per_s": len(idx) / predict_s,
            "best_epoch": result.best_epoch, "refit_epochs": result.refit_epochs, "device": result.device,
            "refit_s": result.refit_seconds, "curve": curve, "pred": pred}


def run_ngram_plain(data: TensorData) -> dict:
    """The n-gram pipeline with scikit-learn's default settings, for reference only."""
    x_train, y_train = texts(data, TRAIN)
    t0 = time.perf_counter()
    model = make_model(1.0, None).fit(x_train, y_train)
    return benchmark_row(model, time.perf_counter() - t0, data)


def margin_interval(y: np.ndarray, pred: np.ndarray, base_pred: np.ndarray, resamples: int = 2000) -> dict:
    """95% paired bootstrap (BCa) intervals of the accuracy and macro-F1 margins over the test rows:
    the small languages have 9 to 20 test names each, so one split's macro-F1 margin moves by
    about 0.015 with which names it happened to draw, and a target should be read against that."""
    def margins(y: np.ndarray, pred: np.ndarray, base_pred: np.ndarray) -> np.ndarray:
        ours, theirs = scores(y, pred), scores(y, base_pred)
        return np.array([ours["acc"] - theirs["acc"], ours["macro_f1"] - theirs["macro_f1"]])

    result = bootstrap((y, pred, base_pred), margins, paired=True, vectorized=False, n_resamples=resamples,
                       rng=np.random.default_rng(0))
    low, high = result.confidence_interval
    return {"acc": [round(float(low[0]), 4), round(float(high[0]), 4)],
            "macro_f1": [round(float(low[1]), 4), round(float(high[1]), 4)]}


def first_reach(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((s for s, acc in curve if acc >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="folder of <Language>.txt files (default: shared data)")
    parser.add_argument("--seed-budget-s", type=float, default=135.0, help="training time of the notebook method")
    parser.add_argument("--seed-epochs", type=int, default=27)
    parser.add_argument("--split-seed", type=int, default=SplitConfig().seed, help="seed of the split")
    parser.add_argument("--train-seed", type=int, default=TrainConfig().seed, help="training seed of (c)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    data = load_data(args.source, args.split_seed)
    sizes = {s: len(data.indices(i)) for i, s in enumerate(("train", "validation", "test"))}
    print(f"data: {sizes} rows, {len(data.label_names)} languages, split by distinct name (split seed "
          f"{args.split_seed}; training seed of (c) {args.train_seed})", flush=True)

    print("(a) seed: the notebook's method", flush=True)
    seed = run_seed(data, args.seed_budget_s, args.seed_epochs)
    print("(b) ngram: TF-IDF char_wb 1-4 + logistic regression, grid on validation macro-F1", flush=True)
    ngram_fit = fit_ngram(data)
    ngram = benchmark_row(ngram_fit.model, ngram_fit.train_s, data)
    ngram_train_only = benchmark_row(ngram_fit.train_only, ngram_fit.train_only_s, data)
    print(f"  chosen C={ngram_fit.C:g} class_weight={ngram_fit.class_weight} (grid {ngram_fit.grid_s:.0f}s), "
          "refit on train + validation")
    plain = run_ngram_plain(data)
    spelt_fit = fit_ngram(data, spelt=True)
    ngram_spelt = benchmark_row(spelt_fit.model, spelt_fit.train_s, data, spelt=True)
    print(f"  the same on the names as spelt (accents kept): chosen C={spelt_fit.C:g} "
          f"class_weight={spelt_fit.class_weight}")
    print(f"(c) default: train_model with the default config (device {TrainConfig().device}: "
          f"{'CUDA, ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        default = run_default(data, Path(tmp), args.train_seed)

    reach = first_reach(default["curve"], seed["acc"])
    seed_reach = first_reach(seed["curve"], seed["acc"])  # at the latest its last epoch: its final accuracy
    speedup = seed_reach / reach if reach else 0.0
    rows = (("seed (a)", seed), ("ngram (b)", ngram), ("ngram (b), train only", ngram_train_only),
            ("ngram, sklearn defaults", plain), ("ngram (b), names as spelt", ngram_spelt), ("default (c)", default))
    print()
    print(f"{'method':<26} {'train_s':>8} {'s/epoch':>8} {'epochs':>6} {'test acc':>9} {'macro-F1':>9} "
          f"{'names/s':>10}")
    for label, r in rows:
        print(f"{label:<26} {r['train_s']:>8.1f} {r['s_per_epoch']:>8.2f} {r['epochs']:>6} {r['acc']:>9.4f} "
              f"{r['macro_f1']:>9.4f} {r['names_per_s']:>10.0f}")
    print()
    for label, base in rows[:-1]:
        print(f"default vs {label:<25}: acc {default['acc'] - base['acc']:+.4f}  "
              f"macro-F1 {default['macro_f1'] - base['macro_f1']:+.4f}  "
              f"train time x{default['train_s'] / base['train_s']:.2f}  "
              f"throughput x{default['names_per_s'] / base['names_per_s']:.1f}")
    print(f"seed first reached its final test acc {seed['acc']:.4f} after {seed_reach:.1f}s of its "
          f"{seed['train_s']:.1f}s of training; default first reached it after "
          f"{reach if reach is not None else float('nan'):.1f}s (per-epoch test accuracy, off the clock) "
          f"-> speedup_to_seed_acc {speedup:.1f}x")
    interval = margin_interval(data.labels[data.indices(TEST)].numpy(), default["pred"], ngram["pred"])
    print(f"default vs ngram (b), 95% paired bootstrap intervals over the {len(default['pred'])} test rows: "
          f"acc [{interval['acc'][0]:+.4f}, {interval['acc'][1]:+.4f}]  "
          f"macro-F1 [{interval['macro_f1'][0]:+.4f}, {interval['macro_f1'][1]:+.4f}]")
    ok_acc = default["acc"] - ngram["acc"] >= 0.03
    ok_f1 = default["macro_f1"] - ngram["macro_f1"] >= 0.05
    ok_acc_spelt = default["acc"] - ngram_spelt["acc"] >= 0.03
    print(f"targets: +3 pts acc over ngram {'met' if ok_acc else 'MISSED'} (over ngram on the names as spelt "
          f"{'met' if ok_acc_spelt else 'MISSED'}); +0.05 macro-F1 over ngram "
          f"{'met' if ok_f1 else 'MISSED'}; >= 3x to seed accuracy {'met' if speedup >= 3 else 'MISSED'}")
    keep = ("train_s", "acc", "macro_f1", "names_per_s")
    print(json.dumps({"seed": {k: round(seed[k], 4) for k in keep},
                      "ngram": {k: round(ngram[k], 4) for k in keep},
                      "ngram_train_only": {k: round(ngram_train_only[k], 4) for k in keep},
                      "ngram_plain": {k: round(plain[k], 4) for k in keep},
                      "ngram_spelt": {k: round(ngram_spelt[k], 4) for k in keep},
                      "default": {k: round(default[k], 4) for k in keep},
                      "speedup_to_seed_acc": round(speedup, 2), "seed_reach_s": round(seed_reach, 2),
                      "default_reach_s": None if reach is None else round(reach, 2), "margin_over_ngram_ci95": interval,
                      "split_seed": args.split_seed, "train_seed": args.train_seed, "device": default["device"],
                      "cpu_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
