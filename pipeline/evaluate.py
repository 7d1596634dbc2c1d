"""Honest evaluation on a held-out split: metrics from scikit-learn, a confusion-matrix plot,
a per-language table, the worst mistakes, and a model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure  # not pyplot: no backend to choose, no global figure registry
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
    top_k_accuracy_score,
)

from pipeline.atomic import atomic_path, write_text_atomic
from pipeline.features import SPLIT_NAMES, TEST, TensorData
from pipeline.metrics import macro_f1
from pipeline.model import predict_logits


@dataclass
class Evaluation:
    split: str
    label_names: list[str]
    y_true: np.ndarray
    probabilities: np.ndarray
    names: list[str]
    metrics: dict
    per_language: pd.DataFrame
    confusion: np.ndarray  # row-normalized

    @property
    def y_pred(self) -> np.ndarray:
        return self.probabilities.argmax(1)


def evaluate(model: torch.nn.Module, data: TensorData, side: int = TEST) -> Evaluation:
    idx = data.indices(side)
    probs = torch.softmax(predict_logits(model, data.tokens[idx], data.lengths[idx], data.marks_at(idx)), 1).numpy()
    return evaluate_probabilities(probs, data.labels[idx].numpy(), data.label_names,
                                  [data.names[i] for i in idx.tolist()], SPLIT_NAMES[side])


def evaluate_probabilities(probs: np.ndarray, y_true: np.ndarray, label_names: list[str], names: list[str],
                           split: str = "test") -> Evaluation:
    labels = np.arange(len(label_names))
    y_pred = probs.argmax(1)
    present = np.unique(y_true)
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": macro_f1(y_true, y_pred),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", labels=present, zero_division=0)),
        # with three languages or fewer, every language is among the top three
        "top3_accuracy": float(top_k_accuracy_score(y_true, probs, k=3, labels=labels))
        if len(label_names) > 3 else 1.0,
        "log_loss": float(log_loss(y_true, np.clip(probs, 1e-7, 1), labels=labels)),
        "n": int(len(y_true)),
    }
    report = classification_report(y_true, y_pred, labels=labels, target_names=label_names, output_dict=True,
                                   zero_division=0)
    per_language = pd.DataFrame([
        {"language": name, "precision": report[name]["precision"], "recall": report[name]["recall"],
         "f1": report[name]["f1-score"], "support": int(report[name]["support"])}
        for name in label_names
    ])
    confusion = confusion_matrix(y_true, y_pred, labels=labels, normalize="true")
    return Evaluation(split, list(label_names), y_true, probs, names, metrics, per_language,
                      np.nan_to_num(confusion))


def plot_confusion(ev: Evaluation, path: Path | None = None) -> Figure:
    """The row-normalised confusion matrix as a Figure (a notebook shows it as it is), written as PNG to
    `path` if given. A bare Figure, not pyplot's: the library leaves the caller's backend alone (a
    notebook's inline one), and no figure stays registered after a run."""
    n = len(ev.label_names)
    fig = Figure(figsize=(0.55 * n + 3, 0.55 * n + 2), dpi=110)
    _draw_confusion(fig, fig.subplots(), ev)
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    return fig


def _draw_confusion(fig, ax, ev: Evaluation) -> None:
    n = len(ev.label_names)
    im = ax.imshow(ev.confusion, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), ev.label_names, rotation=90)
    ax.set_yticks(range(n), ev.label_names)
    ax.set_xlabel("predicted language")
    ax.set_ylabel("true language")
    ax.set_title(f"Confusion matrix ({ev.split}, row-normalized); accuracy {ev.metrics['accuracy']:.3f}, "
                 f"macro-F1 {ev.metrics['macro_f1']:.3f}", fontsize=9)
    for i in range(n):
        for j in range(n):
            if ev.confusion[i, j] >= 0.005:
                ax.text(j, i, f"{ev.confusion[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if ev.confusion[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()


def misclassified(ev: Evaluation, limit: int = 100) -> pd.DataFrame:
    """The most confident mistakes first: where the model is surest and wrong."""
    wrong = np.flatnonzero(ev.y_pred != ev.y_true)
    confidence = ev.probabilities[wrong, ev.y_pred[wrong]]
    order = wrong[np.argsort(-confidence)][:limit]
    return pd.DataFrame({
        "name": [ev.names[i] for i in order],
        "true_language": [ev.label_names[ev.y_true[i]] for i in order],
        "predicted_language": [ev.label_names[ev.y_pred[i]] for i in order],
        "predicted_probability": ev.probabilities[order, ev.y_pred[order]],
        "true_probability": ev.probabilities[order, ev.y_true[order]],
    })


def model_card(ev: Evaluation, *, provenance: dict, split_config: dict, config: dict, tensors_sha256: str,
               train_summary: dict) -> str:
    m = ev.metrics
    # a language without test names has no F1 (macro-F1 leaves it out): it is not the weakest
    worst = ev.per_language[ev.per_language["support"] > 0].sort_values("f1").head(4)
    lines = [
        "# Model card: namelang surname-language classifier", "",
        "Predicts the language a surname comes from, from its spelling, among: "
        + ", ".join(ev.label_names) + ".", "",
        "## Data",
        f"- source: `{provenance.get('ingest', {}).get('source_uri')}`",
        f"- names table SHA-256: `{provenance.get('content_sha256')}`; tensors SHA-256: `{tensors_sha256}`",
        f"- rows: {provenance.get('counts', {}).get('rows')} kept, {provenance.get('counts', {}).get('rejected')} "
        "rejected (see the quality report)",
        f"- split: `{json.dumps(split_config)}`: "
        + ("every copy of a name on one side (no leakage)" if split_config.get("method") == "by_name"
           else "random lines (the notebook's method: copies of a name can sit on both sides)"), "",
        "## Configuration", "```json", json.dumps(config, indent=2, default=str), "```", "",
        "## Training",
        "- " + ", ".join(f"{k}: {v}" for k, v in train_summary.items()), "",
        f"## Metrics ({ev.split} split, {m['n']} "
        + ("rows: distinct (name, language) pairs)" if split_config.get("method") == "by_name" else "lines)"),
        f"- accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, weighted F1 {m['weighted_f1']:.4f}",
        f"- top-3 accuracy {m['top3_accuracy']:.4f}, log-loss {m['log_loss']:.4f}", "",
        "## Per language", "", ev.per_language.to_markdown(index=False, floatfmt=".3f"), "",
        "## Known limits",
        "- A surname can be spelt the same in several languages (in the tutorial's data, almost every Scottish "
        "name is also English); such a name cannot be told apart by spelling, and it caps the reachable accuracy.",
        "- Weakest languages here: " + ", ".join(f"{r.language} (F1 {r.f1:.2f}, n={r.support})"
                                                 for r in worst.itertuples()) + ".",
        "- Classes are very unbalanced; rare languages have few test names, so their scores are noisy.",
        "- Names are reduced to the notebook's ASCII alphabet; other scripts are refused, not transliterated.",
    ]
    return "\n".join(lines) + "\n"


def write_reports(ev: Evaluation, out_dir: str | Path, card: str) -> dict[str, Path]:
    """The evaluation's files, each written atomically, by what they hold: the run logs them as artifacts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "confusion_matrix": out / "confusion_matrix.png",
        "per_language": out / "per_language.csv",
        "misclassified": out / "misclassified.csv",
        "metrics": out / "metrics.json",
        "model_card": out / "model_card.md",
    }
    plot_confusion(ev, paths["confusion_matrix"])
    write_text_atomic(paths["per_language"], ev.per_language.to_csv(index=False))
    write_text_atomic(paths["misclassified"], misclassified(ev).to_csv(index=False))
    write_text_atomic(paths["metrics"], json.dumps(ev.metrics, indent=2))
    write_text_atomic(paths["model_card"], card)
    return paths
