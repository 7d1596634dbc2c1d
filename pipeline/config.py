"""Every setting of the pipeline in one typed place, with defaults that work out of the box.

Pydantic models, so the same objects validate CLI options, render as a form in the Prefect UI,
and log flat to MLflow as params (`flat_params`).
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pipeline.errors import recordable_url

DEFAULT_SOURCE = "https://download.pytorch.org/tutorial/data.zip"
# The notebook's alphabet; "_" stands for any character outside it (out of vocabulary).
ALLOWED_CHARACTERS = string.ascii_letters + " .,;'"
OOV_CHARACTER = "_"
MIB = 1024 * 1024
# Ends with "nothing follows" rather than "$": Python's `re.search` (as a Prefect server checks a JSON-schema
# pattern) lets "$" match before a final newline, so 64 hex digits and a newline would pass the server.
SHA256_PATTERN = r"^[0-9a-fA-F]{64}(?![\s\S])"
# Names every command and flow agrees on. Here, not in pipeline.registry / pipeline.predict, so that the
# CLI can show them as defaults without importing MLflow or PyTorch.
MODEL_NAME = "namelang"  # the registered model (and the MLflow experiment)
CHAMPION, CHALLENGER = "champion", "challenger"  # the promotion gate's aliases
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION}"  # what predict, batch and serve use unless told otherwise
TOP_K = 3  # languages per name in a prediction
MAX_NAME_CHARS = 64  # longer lines are rejected in training tables and refused in predictions


def name_key(name_ascii: str) -> str:
    """What makes two ASCII names one name, for the split and the promotion gate alike: case aside
    ("An" and "an" in Vietnamese.txt; one learnt and the other tested would leak)."""
    return name_ascii.lower()
NAME_COLUMN = "name"  # a batch file's column of names, unless told another
BATCH_CHUNK_NAMES = 50_000  # names read, predicted and written at a time: bounds a batch's memory
# PyTorch threads of a process that loads the model (predict, batch, the REST server): at most this many, so
# that a model served beside other work on a large machine does not claim every core; a process-wide setting
PREDICT_MAX_THREADS = 4


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_true_or_false_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """Pydantic reads true as 1 for a number: `"epochs": true` would train one epoch without a word."""
        if isinstance(value, bool) and _takes_a_number(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected a number, not {str(value).lower()}")
        return value


def _takes_a_number(annotation: Any) -> bool:
    """int, float, or either of them or None; not bool, whose field true and false are meant for."""
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return bool(options) and all(option in (int, float, type(None)) for option in options) and \
        any(option in (int, float) for option in options)


class DataConfig(_Strict):
    """Where names come from and where the tables go."""

    source: str = Field(DEFAULT_SOURCE, description="Folder of <Language>.txt files, a .zip, or an http(s) URL")
    source_sha256: str | None = Field(
        None, description="Expected SHA-256 (64 hex digits) of the source archive",
        json_schema_extra={"pattern": SHA256_PATTERN},  # for a Prefect server to check; `_sha256_hex` words it
    )
    raw_dir: Path = Field(Path("data/raw"), description="Where a downloaded or unpacked source is kept")
    processed_dir: Path = Field(Path("data/processed"), description="Where the Parquet table and the tensors go")
    models_dir: Path | None = Field(
        None, description="Each trained model and its reports, saved before MLflow sees them (one folder per "
        "data and settings); default: `models` beside processed_dir (data/models)"
    )
    cache_dir: Path = Field(Path("data/cache"), description="Where the flow persists cached step results")
    max_name_chars: int = Field(MAX_NAME_CHARS, ge=1, description="Longer names are rejected")
    download_timeout_s: float = Field(60.0, gt=0, description="Seconds a download may wait for the server")
    download_retries: int = Field(3, ge=0, description="Retries of a failed download (flow only)")
    retry_backoff_s: float = Field(2.0, ge=0, description="First retry delay; doubles on each retry")
    max_download_bytes: int = Field(512 * MIB, gt=0, description="Largest source archive accepted (bytes)")
    max_member_bytes: int = Field(64 * MIB, gt=0, description="Largest file accepted inside an archive")

    @field_validator("source", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        """A `Path` is a folder or archive as much as its text is (a notebook passes Paths)."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("source_sha256")
    @classmethod
    def _sha256_hex(cls, value: str | None) -> str | None:
        """Said in words: pydantic's own message for a pattern quotes the regular expression."""
        if value is not None and not re.fullmatch(SHA256_PATTERN, value):
            raise ValueError("expected 64 hex digits (0-9, a-f)")
        return value


class SplitConfig(_Strict):
    """How rows are divided into train / validation / test."""

    method: Literal["by_name", "random_lines"] = Field(
        "by_name",
        description="by_name: every copy of a name on one side (honest); random_lines: the notebook's split",
    )
    train: float = Field(0.70, gt=0, lt=1, description="Share of the names the model learns from")
    validation: float = Field(0.15, ge=0, lt=1, description="Share that picks the epoch (early stopping)")
    test: float = Field(0.15, gt=0, lt=1, description="Share held out for the reported figures and the gate")
    seed: int = Field(2024, ge=0, description="the split's random seed")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.4f}")
        return self


class ModelConfig(_Strict):
    """The character-level classifier; the notebook's CharRNN is `ModelConfig.notebook()`."""

    cell: Literal["rnn", "lstm", "gru"] = Field("gru", description="The recurrent cell")
    input: Literal["embedding", "onehot"] = Field(
        "embedding", description="Characters as learnt vectors, or one-hot as in the notebook")
    embedding_dim: int = Field(64, ge=1, description="Width of a character's vector (embedding input)")
    hidden_size: int = Field(128, ge=1, description="Units of the recurrent layer, per direction")
    num_layers: int = Field(1, ge=1, description="Stacked recurrent layers")
    bidirectional: bool = Field(True, description="Read names in both directions")
    dropout: float = Field(0.4, ge=0, lt=1, description="Dropout before the output layer (and between layers)")
    pooling: Literal["last", "mean_max"] = Field(
        "mean_max", description="last: final hidden state (notebook); mean_max: pooled over all steps"
    )
    ngram_buckets: int = Field(
        65536, ge=0, description="fastText-style branch: hashed char 1..ngram_max grams (0 = off)"
    )
    ngram_dim: int = Field(64, ge=1, description="Width of the n-gram branch's averaged embedding")
    ngram_max: int = Field(4, ge=1, le=4, description="Longest character n-gram hashed (with word boundaries)")
    char_dropout: float = Field(0.0, ge=0, lt=1, description="Training only: chance a character is masked as OOV")
    ngram_dropout: float = Field(0.0, ge=0, lt=1, description="Training only: chance an n-gram is left out")
    charlm_order: int = Field(
        4, ge=0, le=6, description="Per-language Kneser-Ney character n-gram models averaged with the network: "
        "longest n-gram (0 = off)"
    )
    charlm_discount: float = Field(0.75, gt=0, lt=1, description="Kneser-Ney absolute discount")
    charlm_weight: float = Field(
        0.5, ge=0, le=1, description="Share of the n-gram models in the averaged log-probabilities"
    )
    marks_weight: float = Field(
        1.0, ge=0, le=10, description="Weight of the letter model (`pipeline.marks`): what a name's non-ASCII "
        "letters (ä, é, ñ, ł, ...), which the ASCII folding drops, say of its language (0 = off)"
    )
    members: int = Field(
        1, ge=1, le=8, description="Ensemble size: members trained side by side, each on its own loss; "
        "prediction averages their log-probabilities"
    )

    @classmethod
    def notebook(cls) -> ModelConfig:
        """The tutorial's CharRNN: one-hot input, nn.RNN(58, 128), last hidden state, linear."""
        return cls(
            cell="rnn", input="onehot", hidden_size=128, num_layers=1, bidirectional=False,
            dropout=0.0, pooling="last", ngram_buckets=0, charlm_order=0, marks_weight=0.0, members=1,
        )


class TrainConfig(_Strict):
    """The optimisation loop."""

    epochs: int = Field(20, ge=1, description="Most epochs (early stopping may end sooner)")
    batch_size: int = Field(256, ge=1, description="Names per optimisation step")
    learning_rate: float = Field(5e-3, gt=0, description="AdamW's (peak) learning rate")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW's weight decay")
    lr_schedule: Literal["onecycle", "cosine", "constant"] = Field(
        "onecycle", description="How the learning rate moves over the epochs")
    patience: int = Field(4, ge=1, description="Epochs without a better validation macro-F1 before stopping")
    class_weighting: bool = Field(True, description="Weight the loss by inverse class frequency")
    class_weight_power: float = Field(
        0.5, ge=0, le=1, description="Class weight = frequency^-power (1: balanced, 0.5: inverse square root)"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Share of each label's weight spread over the others")
    clip_grad_norm: float = Field(1.0, gt=0, description="Largest gradient norm of a step (clipped above it)")
    refit_on_train_and_validation: bool = Field(
        False, description="After early stopping picks the best epoch E on validation, retrain from scratch on "
        "train + validation for E epochs (same seed and LR schedule) and return that model; the refit phase is "
        "not checkpointed epoch by epoch (an interrupted refit is redone on resume)"
    )
    charlm_counts_validation: bool = Field(
        True, description="Once early stopping has picked the network's epoch, count the validation names into "
        "the n-gram and letter models too: early stopping judges the network alone, so none of their counts need "
        "to stay out of validation; the logged validation figures stay those of the train-only counts. No effect with "
        "refit_on_train_and_validation, whose refit counts both splits anyway"
    )
    seed: int = Field(2024, ge=0, le=2**64 - 1, description="torch's random seed: weights and batch order")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: a CUDA GPU when there is one (bf16 autocast), else the CPU")
    num_threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores")
    max_seconds: float | None = Field(
        None, gt=0, description="Stop the first phase after this much training time (a refit comes on top)"
    )
    checkpoint_dir: Path | None = Field(
        Path("data/checkpoints"), description="Where each epoch's checkpoint goes, for --resume (None: none is "
        "written, as for a notebook's quick experiments, and nothing can be resumed)"
    )
    keep_checkpoint: bool = Field(
        False, description="Keep a run's checkpoint after its model is saved and registered (by default it is "
        "deleted then: it is about 70 MB, and only an interrupted or failed run needs it for --resume)"
    )
    progress: bool = Field(True, description="A progress bar, where the output is a terminal (not in a log "
                           "file or a deployment's run: its frames would fill each line)")


class PipelineConfig(_Strict):
    """The whole pipeline's settings: data, split, model, training."""

    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


def flat_params(config: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Flatten nested settings to `section.key` pairs (MLflow params, the model card, summaries); a
    URL (the data source) without its password or token: whoever reads the store reads these."""
    flat: dict[str, Any] = {}
    for key, value in config:
        name = f"{prefix}{key}"
        if isinstance(value, BaseModel):
            flat.update(flat_params(value, f"{name}."))
        else:
            flat[name] = str(value) if isinstance(value, Path) else recordable_url(value) if isinstance(
                value, str) else value
    return flat
