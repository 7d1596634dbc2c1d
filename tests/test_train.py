"""Training: every cell learns, seeds reproduce, resume continues, bad checkpoints are clear errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from pipeline.checkpoint import CheckpointWriter, load_checkpoint
from pipeline.config import DataConfig, ModelConfig, SplitConfig, TrainConfig
from pipeline.errors import NamelangError, explained_by_input
from pipeline.features import TEST, TRAIN, VALIDATION, build_tensors, save_tensors
from pipeline.model import CharClassifier, predict_logits
from pipeline.train import (
    class_weights,
    length_batches,
    refit,
    resolve_device,
    run_key,
    split_metrics,
    train_model,
)
from tests.support import SHARED_NAMES, SMALL_LANGUAGES, damage_a_tensor

TINY = ModelConfig(embedding_dim=16, hidden_size=24, ngram_buckets=256, ngram_dim=16)


@pytest.fixture(scope="module")
def small_data():
    """The first 80 distinct names of six real languages: learnable in a second."""
    rows = []
    for language in SMALL_LANGUAGES:
        lines = (SHARED_NAMES / f"{language}.txt").read_text(encoding="utf-8").splitlines()
        rows += [(name, language) for name in dict.fromkeys(lines[:400])][:80]
    table = pa.table({"name_ascii": [r[0] for r in rows], "language": [r[1] for r in rows]})
    return build_tensors(table, "small", SplitConfig(seed=7))


def tiny_train(tmp_path: Path, **overrides) -> TrainConfig:
    settings = {"epochs": 4, "batch_size": 32, "learning_rate": 1e-2, "progress": False, "device": "cpu",
                "checkpoint_dir": tmp_path / "checkpoints", **overrides}
    return TrainConfig(**settings)


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_each_cell_trains_and_its_loss_falls(small_data, tmp_path, cell):
    result = train_model(small_data, TINY.model_copy(update={"cell": cell}), tiny_train(tmp_path, patience=10))
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    # early stopping judges the network alone; the n-gram language models are fixed counts
    assert result.best_epoch == max(range(1, 5), key=lambda e: result.history[e - 1]["val_network_macro_f1"])
    assert result.device == "cpu" and result.checkpoint.exists() and result.label_names == sorted(SMALL_LANGUAGES)
    assert split_metrics(result.model, small_data, TEST)["acc"] > 0.4
    assert {"epoch", "train_loss", "val_macro_f1", "val_network_macro_f1", "lr", "epoch_seconds",
            "elapsed_s"} <= result.history[0].keys()


def test_same_seed_gives_bit_identical_weights_on_cpu(small_data, tmp_path):
    config = TINY.model_copy(update={"members": 2})
    a = train_model(small_data, config, tiny_train(tmp_path / "a", epochs=2))
    b = train_model(small_data, config, tiny_train(tmp_path / "b", epochs=2))
    c = train_model(small_data, config, tiny_train(tmp_path / "c", epochs=2, seed=1))
    assert_same_weights(weights(a.model), weights(b.model))
    assert not torch.equal(a.model.head.weight, c.model.head.weight)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]


def test_best_weights_are_restored_when_validation_stops_improving(small_data, tmp_path):
    result = train_model(small_data, TINY, tiny_train(tmp_path, epochs=12, patience=1, learning_rate=5e-2,
                                                      lr_schedule="constant", refit_on_train_and_validation=False))
    assert result.stopped_early and len(result.history) < 12
    assert result.best_epoch == len(result.history) - 1
    with result.model.network_only():  # the n-gram models have counted the validation names since
        metrics = split_metrics(result.model, small_data, VALIDATION)
    assert metrics["macro_f1"] == pytest.approx(result.history[result.best_epoch - 1]["val_network_macro_f1"])


class Interrupt(Exception):
    pass


def full_and_interrupted(data, config: TrainConfig, full_dir: Path):
    """An uninterrupted run (checkpoints in `full_dir`), and the same run interrupted after epoch 2
    (its checkpoint in `config.checkpoint_dir`); returns the first."""
    full = train_model(data, TINY, config.model_copy(update={"checkpoint_dir": full_dir}))

    def stop_after_two(record: dict) -> None:
        if record["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_model(data, TINY, config, on_epoch=stop_after_two)
    return full


def test_resume_continues_from_the_checkpoint_of_an_interrupted_run(small_data, tmp_path):
    config = tiny_train(tmp_path / "interrupted", epochs=5, patience=10)
    full = full_and_interrupted(small_data, config, tmp_path / "full")
    seen: list = []
    resumed = train_model(small_data, TINY, config, on_epoch=seen.append, resume=True,
                          on_resume=lambda epoch: seen.append(f"resumed after {epoch}"))
    # the resume is announced first; then the callback hears of every epoch: the two before the
    # interruption (a new tracking run gets whole curves), then the three trained now
    assert seen[0] == "resumed after 2"
    seen = seen[1:]
    assert resumed.resumed_from_epoch == 2 and [r["epoch"] for r in seen] == [1, 2, 3, 4, 5]
    assert [r["train_loss"] for r in seen] == [r["train_loss"] for r in full.history]
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    assert_same_weights(weights(resumed.model), weights(full.model))
    # resuming a finished run trains nothing more
    again = train_model(small_data, TINY, config, resume=True)
    assert again.resumed_from_epoch == 5 and again.best_epoch == full.best_epoch
    assert_same_weights(weights(again.model), weights(full.model))


def test_a_budget_stopped_refit_run_resumed_without_the_budget_matches_an_unstopped_one(small_data, tmp_path):
    """The refit made at the budget stop is for that moment's best epoch: resumed without the budget,
    training goes on from the last epoch (not the best weights, not the refit's RNG) and refits anew."""
    config = tiny_train(tmp_path / "stopped", epochs=5, patience=10, refit_on_train_and_validation=True)
    full = train_model(small_data, TINY, config.model_copy(update={"checkpoint_dir": tmp_path / "full"}))
    stopped = train_model(small_data, TINY, config.model_copy(update={"max_seconds": 1e-6}))
    assert stopped.stopped_by_budget and len(stopped.history) == 1 and stopped.refit_epochs == 1
    resumed = train_model(small_data, TINY, config, resume=True)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    assert resumed.refit_epochs == full.refit_epochs == full.best_epoch
    assert_same_weights(weights(resumed.model), weights(full.model))


def test_refit_retrains_on_train_and_validation_for_the_best_epoch_count(small_data, tmp_path):
    config = tiny_train(tmp_path, epochs=5, patience=10, refit_on_train_and_validation=True)
    result = train_model(small_data, TINY, config)
    assert result.refit_epochs == result.best_epoch and 0 < result.refit_seconds < result.train_seconds
    assert len(result.history) == 5 and not result.model.training
    # the model returned is a fresh, deterministic retraining for best_epoch epochs ...
    again = refit(small_data, TINY, config, result.best_epoch)
    assert_same_weights(weights(result.model), weights(again))
    assert_same_weights(charlm_tables(weights(result.model)), counts_of(small_data, TRAIN, VALIDATION))
    # ... not the first phase's best weights ...
    first = load_checkpoint(result.checkpoint)["best_state"]
    assert not torch.equal(first["head.weight"], result.model.state_dict()["head.weight"])
    # ... and it learns from the validation rows too
    shuffled = copy.copy(small_data)
    val = small_data.indices(VALIDATION)
    shuffled.labels = small_data.labels.clone()
    shuffled.labels[val] = small_data.labels[val].roll(1)
    assert not torch.equal(refit(shuffled, TINY, config, result.best_epoch).head.weight, again.head.weight)
    # resuming the finished run returns the stored refit model without training again
    resumed = train_model(small_data, TINY, config, resume=True)
    assert resumed.resumed_from_epoch == 5 and resumed.refit_epochs == result.best_epoch
    assert resumed.refit_seconds == result.refit_seconds  # the stored refit, not a new one
    assert_same_weights(weights(resumed.model), weights(result.model))


def test_without_refit_the_first_phase_model_is_returned(small_data, tmp_path):
    result = train_model(small_data, TINY, tiny_train(tmp_path, epochs=2, refit_on_train_and_validation=False,
                                                      charlm_counts_validation=False))
    assert result.refit_epochs is None and result.refit_seconds == 0.0
    assert_same_weights(weights(result.model), load_checkpoint(result.checkpoint)["best_state"])


def charlm_tables(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("charlm.")}


def network_weights(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("charlm.")}


def counts_of(data, *sides: int) -> dict[str, torch.Tensor]:
    """The n-gram model tables of TINY fitted on the rows of `sides`."""
    idx = data.indices(*sides)
    model = CharClassifier(TINY, len(data.label_names))
    model.fit_counts(data.tokens[idx], data.lengths[idx], data.labels[idx])
    return charlm_tables(model.state_dict())


def test_the_ngram_models_count_validation_names_once_the_network_is_chosen(small_data, tmp_path):
    counted = train_model(small_data, TINY, tiny_train(tmp_path / "a", epochs=3))  # the default
    train_only = train_model(small_data, TINY, tiny_train(tmp_path / "b", epochs=3, charlm_counts_validation=False))
    # the same network, chosen on the same validation figures (measured with train-only counts) ...
    assert counted.history == [{**r, **{k: counted.history[i][k] for k in ("epoch_seconds", "elapsed_s")}}
                               for i, r in enumerate(train_only.history)]
    assert counted.best_epoch == train_only.best_epoch
    assert_same_weights(network_weights(weights(counted.model)), network_weights(weights(train_only.model)))
    # ... but the returned n-gram models have counted train + validation; the checkpoint's, train only
    train_counts, both_counts = (counts_of(small_data, TRAIN), counts_of(small_data, TRAIN, VALIDATION))
    assert_same_weights(charlm_tables(counted.model.state_dict()), both_counts)
    assert_same_weights(charlm_tables(train_only.model.state_dict()), train_counts)
    assert_same_weights(charlm_tables(load_checkpoint(counted.checkpoint)["best_state"]), train_counts)
    assert (counted.ngram_models_counted, train_only.ngram_models_counted) == ("train + validation", "train")
    assert counted.model.charlm.gram_keys.shape != train_only.model.charlm.gram_keys.shape
    val = small_data.indices(VALIDATION)
    with torch.no_grad():
        assert not torch.allclose(counted.model.charlm(small_data.tokens[val], small_data.lengths[val]),
                                  train_only.model.charlm(small_data.tokens[val], small_data.lengths[val]))


def test_resume_without_a_checkpoint_says_so_and_trains_from_the_start(small_data, tmp_path):
    with pytest.warns(UserWarning, match="nothing to resume: no checkpoint .*train-.*pt"):
        result = train_model(small_data, TINY, tiny_train(tmp_path, epochs=1), resume=True)
    assert result.resumed_from_epoch is None and len(result.history) == 1


def test_training_without_checkpoints_writes_nothing(small_data, tmp_path, monkeypatch):
    """A notebook's quick experiment: `checkpoint_dir=None` leaves no 70 MB file per run behind (the
    default folder is relative to the working directory), and a resume says why there is nothing."""
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"nothing to resume: checkpoints are off \(train.checkpoint_dir is None\)"):
        result = train_model(small_data, TINY, tiny_train(tmp_path, epochs=2, checkpoint_dir=None), resume=True)
    assert result.checkpoint is None and len(result.history) == 2
    assert list(tmp_path.iterdir()) == []


def test_the_progress_bar_is_drawn_on_a_terminal_only(small_data, tmp_path, capsys):
    """`make run > log` filled the log with the bar's frames (carriage returns)."""
    import dataclasses
    import fcntl
    import os
    import pty
    import select
    import struct
    import subprocess
    import sys
    import termios

    from pipeline.normalize import to_ascii

    train_model(small_data, TINY, tiny_train(tmp_path / "piped", epochs=1, progress=True))
    assert "train:" not in capsys.readouterr().err  # pytest's capture: not a terminal
    # on a terminal (a pseudo-terminal as stderr), drawn; its names in ASCII, as a tensors file holds them
    ascii_names = dataclasses.replace(small_data, names=to_ascii(pa.array(small_data.names)).to_pylist())
    tensors = save_tensors(ascii_names, tmp_path / "tensors.pt")
    script = ("import sys\n"
              "from pipeline.config import ModelConfig, TrainConfig\n"
              "from pipeline.features import load_tensors\n"
              "from pipeline.train import train_model\n"
              "train_model(load_tensors(sys.argv[1]), ModelConfig.model_validate_json(sys.argv[2]),\n"
              "            TrainConfig.model_validate_json(sys.argv[3]))\n")
    config = tiny_train(tmp_path / "tty", epochs=1, progress=True)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns: a new one has none
    drawn = b""
    with subprocess.Popen([sys.executable, "-c", script, str(tensors), TINY.model_dump_json(),
                           config.model_dump_json()], stderr=follower, stdout=subprocess.DEVNULL,
                          cwd=Path(__file__).parents[1]) as proc:
        # the terminal stays open here until all is read: closed by the process's exit, what it held is lost
        while proc.poll() is None or select.select([leader], [], [], 0)[0]:
            if select.select([leader], [], [], 0.1)[0]:
                drawn += os.read(leader, 1 << 16)
    os.close(follower)
    os.close(leader)
    assert proc.returncode == 0, drawn.decode(errors="replace")[-2000:]
    assert b"train:" in drawn


def test_a_corrupted_checkpoint_is_a_clear_error(small_data, tmp_path):
    config = tiny_train(tmp_path, epochs=1)
    result = train_model(small_data, TINY, config)
    whole = result.checkpoint.read_bytes()
    for kept in (64, len(whole) // 2):  # torch's errors differ by where the file was cut
        result.checkpoint.write_bytes(whole[:kept])
        with pytest.raises(NamelangError, match="checkpoint is corrupt or unreadable \\(cut short") as err:
            train_model(small_data, TINY, config, resume=True)  # not torch's paragraph on miniz
        assert str(result.checkpoint) in str(err.value) and "--resume" in str(err.value)
        assert explained_by_input(err.value)  # the file's fault: one line, no traceback of torch's
    torch.save({"format": 1, "model": {"not": torch.zeros(1)}}, result.checkpoint)  # another model's: or our bug,
    with pytest.raises(NamelangError, match="checkpoint does not match this model or version") as err:
        train_model(small_data, TINY, config, resume=True)
    assert not explained_by_input(err.value)  # whose traceback is kept
    # this model's checkpoint, but best weights of another shape, or progress without its history: a
    # RuntimeError and a KeyError, after training had resumed
    result.checkpoint.write_bytes(whole)
    saved = torch.load(result.checkpoint, weights_only=True)
    wrong_shapes = {**saved, "best_state": {k: v[..., :1] if v.dim() else v for k, v in saved["best_state"].items()}}
    no_history = {**saved, "state": {k: v for k, v in saved["state"].items() if k != "history"}}
    for changed, problem in ((wrong_shapes, "Error\\(s\\) in loading state_dict"),
                             (no_history, "its progress lacks \\['history'\\]")):
        torch.save(changed, result.checkpoint)
        with pytest.raises(NamelangError, match=f"checkpoint does not match this model or version .*{problem}"):
            train_model(small_data, TINY, config, resume=True)
    with pytest.raises(NamelangError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    # damaged inside a tensor, whole otherwise: torch loaded it, and the run resumed with a changed number
    result.checkpoint.write_bytes(whole)
    damage_a_tensor(result.checkpoint)
    with pytest.raises(NamelangError, match="checkpoint is corrupt or unreadable .* is damaged: its checksum") as err:
        train_model(small_data, TINY, config, resume=True)
    assert explained_by_input(err.value)


def test_checkpoints_written_in_the_background_hold_the_state_of_their_epoch(tmp_path):
    weights_now = torch.zeros(1000, 64)
    path = tmp_path / "ck.pt"
    with CheckpointWriter(path) as writer:
        writer.save({"model": {"w": weights_now}, "state": {"epoch": 1}}, best_state={"w": weights_now.clone()})
        weights_now.add_(1.0)  # training goes on changing the tensors in place
    saved = load_checkpoint(path)
    assert saved["state"] == {"epoch": 1} and saved["format"] == 1
    assert torch.equal(saved["model"]["w"], torch.zeros(1000, 64))


def test_a_ctrl_c_before_the_checkpoint_thread_starts_does_not_hang_the_exit(tmp_path, monkeypatch):
    """The event a write's thread sets was kept before the thread existed: a Ctrl-C in between left the
    way out waiting on it for ever (until a second Ctrl-C)."""
    import threading
    from types import SimpleNamespace

    from pipeline import checkpoint

    class Interrupted(threading.Thread):
        def start(self):
            raise KeyboardInterrupt  # before the thread runs

    # the checkpoint module's threading only: a thread started elsewhere in this process meanwhile is left alone
    monkeypatch.setattr(checkpoint, "threading", SimpleNamespace(Thread=Interrupted, Event=threading.Event))
    writer = CheckpointWriter(tmp_path / "ck.pt")
    with pytest.raises(KeyboardInterrupt):
        writer.save({"state": {"epoch": 1}}, best_state={})
    monkeypatch.undo()  # the way out waits in a thread of its own, so that a hang fails the test
    leaving = threading.Thread(target=writer.__exit__, args=(KeyboardInterrupt, KeyboardInterrupt(), None),
                               daemon=True)
    leaving.start()
    leaving.join(timeout=10)
    assert not leaving.is_alive()


def test_a_checkpoint_that_cannot_be_written_is_a_clear_error(small_data, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoint folder should be")
    with pytest.raises(NamelangError, match="could not write the checkpoint") as err:
        train_model(small_data, TINY, tiny_train(blocker, epochs=2))
    assert str(blocker / "checkpoints") in str(err.value)


def test_without_a_validation_split_the_trained_model_is_returned(tmp_path):
    """The notebook's 85/15 split has no validation rows: training must still keep what it learned."""
    rows = [(f"{lang[:3]}{chr(97 + i % 26)}{i}", lang) for lang in SMALL_LANGUAGES for i in range(40)]
    table = pa.table({"name_ascii": [r[0] for r in rows], "language": [r[1] for r in rows]})
    data = build_tensors(table, "sha", SplitConfig(train=0.85, validation=0.0, test=0.15))
    assert len(data.indices(VALIDATION)) == 0
    result = train_model(data, TINY, tiny_train(tmp_path, epochs=3))
    assert result.best_epoch >= 1 and math.isnan(result.best_val_macro_f1)
    untrained = train_model(data, TINY, tiny_train(tmp_path / "none", epochs=1, learning_rate=1e-12)).model
    assert not torch.equal(weights(result.model)["head.weight"], weights(untrained)["head.weight"])


def test_a_time_budget_stop_is_not_taken_for_the_end_of_training(small_data, tmp_path):
    config = tiny_train(tmp_path, epochs=4, patience=10, max_seconds=1e-3)
    cut = train_model(small_data, TINY, config)
    assert cut.stopped_by_budget and len(cut.history) == 1 and not cut.stopped_early
    # the budget is not part of the run's identity: resuming without it trains the rest
    resumed = train_model(small_data, TINY, config.model_copy(update={"max_seconds": None}), resume=True)
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 4 and not resumed.stopped_by_budget
    # spent by the last epoch, the budget stopped nothing: it was "time budget", and the checkpoint was kept for a
    # --resume with no epoch left to train
    last = train_model(small_data, TINY, tiny_train(tmp_path / "last", epochs=1, max_seconds=1e-3))
    assert not last.stopped_by_budget and last.stopped_by == "epochs" and len(last.history) == 1


def test_a_checkpoint_of_another_model_is_a_clear_error(small_data, tmp_path):
    config = tiny_train(tmp_path, epochs=1)
    result = train_model(small_data, TINY, config)
    torch.save({"format": 1, "model": {}, "hello": 1}, result.checkpoint)
    with pytest.raises(NamelangError, match="checkpoint does not match this model or version"):
        train_model(small_data, TINY, config, resume=True)


def test_the_notebook_configuration_trains(small_data, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a notebook might; training uses its own setting and gives this one back
    during = []
    try:
        result = train_model(small_data, ModelConfig.notebook(),
                             tiny_train(tmp_path, epochs=3, class_weighting=False, num_threads=2),
                             on_epoch=lambda record: during.append(torch.get_num_threads()))
        assert torch.get_num_threads() == 1 and during == [2, 2, 2]
    finally:
        torch.set_num_threads(threads)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_run_identity_ignores_where_and_how_fast(small_data, tmp_path):
    a = run_key(small_data, TINY, tiny_train(tmp_path / "a", progress=True, num_threads=1))
    assert a == run_key(small_data, TINY, tiny_train(tmp_path / "b"))
    # what the n-gram models count after training changes no epoch and no checkpoint: resumable either way
    assert a == run_key(small_data, TINY, tiny_train(tmp_path / "a", charlm_counts_validation=False))
    assert a != run_key(small_data, TINY, tiny_train(tmp_path, epochs=5))


_HOLD_THE_SLOT = """
import sys, time
import filelock
with filelock.FileLock(sys.argv[1]):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_trainings_of_the_same_data_and_settings_take_turns(small_data, tmp_path):
    """They share a checkpoint and a model folder: the first to end deleted the checkpoint another kept
    for --resume. A second one (here: another process holding the slot) waits, and says so."""
    import subprocess
    import sys
    import time
    import warnings

    from pipeline import workflow
    from pipeline.config import PipelineConfig
    from pipeline.errors import NamelangWarning

    config = PipelineConfig(data=DataConfig(source=str(tmp_path), models_dir=tmp_path / "models"), model=TINY,
                            train=tiny_train(tmp_path))
    other = config.model_copy(update={"train": tiny_train(tmp_path, num_threads=1, max_seconds=60)})  # same key
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # free: no wait, no word
        with workflow.training_slot(config, small_data):
            pass
    # the other holds the model folder; then another, with a models folder of its own, the checkpoint only
    elsewhere = config.model_copy(update={"data": config.data.model_copy(update={"models_dir": tmp_path / "other"})})
    checkpoint = Path(config.train.checkpoint_dir) / f"train-{run_key(small_data, TINY, config.train)}.pt"
    for held, shared in ((workflow.model_dir(other, small_data), config), (checkpoint, elsewhere)):
        holder = subprocess.Popen([sys.executable, "-c", _HOLD_THE_SLOT, f"{held}.lock", "3"], stdout=subprocess.PIPE,
                                  text=True)
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        with pytest.warns(NamelangWarning, match=f"another training of the same data with the same settings is "
                                                 f"running \\(they share {held}\\)"), \
                workflow.training_slot(shared, small_data):
            waited = time.monotonic() - started
        holder.wait(timeout=30)
        assert waited >= 1.5  # it waited for the other to end (3 s, less its start)


def test_length_batches_cover_every_row_once_with_similar_lengths():
    lengths = torch.randint(1, 20, (1000,))
    batches = length_batches(lengths, 64, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    assert max(int(lengths[b].max() - lengths[b].min()) for b in batches) <= 2


def test_class_weights_have_mean_one_and_favour_rare_classes():
    counts = torch.tensor([1000, 100, 10])
    for power in (0.5, 1.0):
        w = class_weights(counts, power)
        assert w.mean().item() == pytest.approx(1.0) and w[0] < w[1] < w[2]
    assert (class_weights(counts, 1.0) * counts).std() < 1e-3  # "balanced": every class weighs the same
    assert torch.equal(class_weights(counts, 0.0), torch.ones(3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: auto picks it")
def test_device_auto_falls_back_to_cpu_and_missing_cuda_is_a_clear_error():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(NamelangError, match="cuda"):
        resolve_device("cuda")


@pytest.mark.slow
def test_short_default_run_on_the_shared_data_learns(tmp_path):
    from pipeline.ingest import ingest
    from pipeline.normalize import normalize

    table = normalize(ingest(DataConfig(source=str(SHARED_NAMES), raw_dir=tmp_path / "raw",
                                        processed_dir=tmp_path / "processed")))
    data = build_tensors(table.names, table.sha256, SplitConfig())
    result = train_model(data, ModelConfig(), TrainConfig(epochs=2, progress=False, checkpoint_dir=tmp_path / "ck"))
    assert len(result.history) == 2 and result.history[1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["val_acc"] > 0.6 and len(data.indices(TRAIN)) > 10000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_resume_continues_the_interrupted_run(small_data, tmp_path):
    """The CUDA generator is saved and restored with the rest; GPU kernels (atomics in embedding
    gradients, cuDNN) need not be bit-reproducible, so the comparison allows rounding."""
    config = tiny_train(tmp_path / "interrupted", device="cuda", epochs=5, patience=10)
    full = full_and_interrupted(small_data, config, tmp_path / "full")
    assert load_checkpoint(next((tmp_path / "interrupted" / "checkpoints").glob("train-*.pt")))["cuda_rng"] is not None
    resumed = train_model(small_data, TINY, config, resume=True)
    assert resumed.resumed_from_epoch == 2 and resumed.device.startswith("cuda")
    assert [r["train_loss"] for r in resumed.history] == pytest.approx([r["train_loss"] for r in full.history],
                                                                       rel=1e-2)
    got = weights(resumed.model)
    for name, tensor in weights(full.model).items():
        assert torch.allclose(got[name].float(), tensor.float(), atol=5e-2), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_model_trained_on_the_gpu_is_evaluated_and_predicts_where_it_trained(small_data, tmp_path):
    """The workflow evaluates the trained model where it is, and the Predictor takes it as it is:
    their inputs are built on the CPU and must reach the GPU, their results come back to the CPU,
    and they agree with the same weights on the CPU (bf16 autocast is training's only)."""
    import numpy as np

    from pipeline.evaluate import evaluate
    from pipeline.predict import Predictor

    result = train_model(small_data, TINY, tiny_train(tmp_path, device="cuda", epochs=4))
    assert next(result.model.parameters()).is_cuda
    on_gpu = evaluate(result.model, small_data)
    on_cpu = evaluate(copy.deepcopy(result.model).cpu(), small_data)
    assert on_gpu.metrics["accuracy"] > 0.5 and on_gpu.metrics["n"] == len(small_data.indices(TEST))
    assert np.allclose(on_gpu.probabilities, on_cpu.probabilities, atol=1e-3)
    out = Predictor(result.model, small_data.label_names).predict(["Nakamura", "Jäger", ""])
    assert out["language"][0] in small_data.label_names and out["language"][2] is None
    assert out["error"][:2] == [None, None]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_with_bf16_autocast_learns_and_returns_a_usable_model(small_data, tmp_path):
    from pipeline import train

    result = train_model(small_data, TINY, tiny_train(tmp_path, device="auto", epochs=6))
    assert result.device.startswith("cuda")
    assert not train._BF16_FAILED, "training fell back to float32: bf16 autocast was not used"
    assert next(result.model.parameters()).is_cuda
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    cpu_model = result.model.cpu()
    logits = predict_logits(cpu_model, small_data.tokens[:8], small_data.lengths[:8])
    assert logits.shape == (8, len(small_data.label_names)) and torch.isfinite(logits).all()


def test_the_confusion_plot_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend stays: importing the library switched the process to Agg. The plot
    comes back as a Figure to show, and is written as a PNG when given a path."""
    import os
    import subprocess
    import sys

    import numpy as np

    from pipeline.evaluate import evaluate_probabilities, plot_confusion

    probe = "import matplotlib, pipeline.evaluate, pipeline.workflow; print(matplotlib.get_backend())"
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "MPLBACKEND": "svg"})
    assert shown.stdout.strip() == "svg", shown.stderr[-2000:]
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    ev = evaluate_probabilities(probs, np.array([0, 1, 1]), ["English", "French"], ["A", "B", "C"])
    figure = plot_confusion(ev, tmp_path / "cm.png")
    assert figure.axes and (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_early_stopping_the_evaluation_and_the_gate_score_macro_f1_alike():
    """One definition: the mean F1 over the languages among the true labels. Greek is predicted once but
    has no true names: it costs English's recall, and adds no F1 of its own."""
    import numpy as np

    from pipeline.evaluate import evaluate_probabilities
    from pipeline.metrics import macro_f1
    from pipeline.registry import macro_f1 as gate_macro_f1
    from pipeline.train import logit_metrics

    labels = ["English", "French", "Greek"]
    y_true = np.array([0, 0, 1, 1])
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 3.0, 0.0], [3.0, 0.0, 0.0]])
    expected = (2 * 0.5 * 0.5 / (0.5 + 0.5) + 2 * 1.0 * 0.5 / 1.5) / 2  # English P 1/2 R 1/2, French P 1 R 1/2
    probs = torch.softmax(logits, 1).numpy()
    names = [labels[i] for i in logits.argmax(1).tolist()]
    assert macro_f1(y_true, logits.argmax(1).numpy()) == pytest.approx(expected)
    assert logit_metrics(logits, torch.from_numpy(y_true))["macro_f1"] == pytest.approx(expected)
    assert evaluate_probabilities(probs, y_true, labels, ["a", "b", "c", "d"]).metrics["macro_f1"] == \
        pytest.approx(expected)
    assert gate_macro_f1(names, [labels[i] for i in y_true]) == pytest.approx(expected)


def test_a_language_without_test_names_is_not_called_the_weakest():
    """Its F1 of 0 is no score (macro-F1 leaves it out): the model card named it the weakest."""
    import numpy as np

    from pipeline.evaluate import evaluate_probabilities, model_card

    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    ev = evaluate_probabilities(probs, np.array([0, 1, 1]), ["English", "French", "Greek"], ["A", "B", "C"])
    card = model_card(ev, provenance={}, split_config={}, config={}, tensors_sha256="0" * 64, train_summary={})
    [weakest] = [line for line in card.splitlines() if line.startswith("- Weakest languages here:")]
    assert "French (F1 0.67, n=2)" in weakest and "English" in weakest and "Greek" not in weakest


def test_seeds_out_of_range_are_a_configuration_error():
    """They passed validation and failed later with a traceback, one after the MLflow run had started."""
    from pydantic import ValidationError

    from pipeline.config import PipelineConfig

    for bad in ({"split": {"seed": -1}}, {"train": {"seed": -1}}, {"train": {"seed": 2**64}}):
        with pytest.raises(ValidationError, match="seed"):
            PipelineConfig.model_validate(bad)
    widest = PipelineConfig.model_validate({"train": {"seed": 2**64 - 1}, "split": {"seed": 2**70}})
    assert widest.train.seed == 2**64 - 1 and widest.split.seed == 2**70


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_every_schedule_runs_for_any_number_of_steps(schedule):
    """OneCycleLR divided by zero at exactly 5 steps in all (`--epochs 1` on a few batches of names)."""
    from pipeline.config import TrainConfig
    from pipeline.train import _scheduler

    for epochs, steps_per_epoch in [(1, n) for n in range(1, 40)] + [(5, 1), (1, 5), (2, 3), (3, 7)]:
        optimizer = torch.optim.AdamW(torch.nn.Linear(1, 1).parameters(), lr=1e-3)
        scheduler = _scheduler(optimizer, TrainConfig(epochs=epochs, lr_schedule=schedule), steps_per_epoch)
        for _ in range(epochs * steps_per_epoch - 1):
            optimizer.step()
            scheduler.step()
        assert 0 <= scheduler.get_last_lr()[0] <= 5e-3


def test_the_run_records_the_models_folder_used_not_none_for_its_default():
    from pipeline.config import PipelineConfig, flat_params
    from pipeline.workflow import as_recorded

    assert flat_params(as_recorded(PipelineConfig()))["data.models_dir"] == str(Path("data/models"))
    chosen = PipelineConfig.model_validate({"data": {"models_dir": "/srv/models"}})
    assert flat_params(as_recorded(chosen))["data.models_dir"] == "/srv/models"
    assert PipelineConfig().data.models_dir is None  # the config itself is left as it was


def test_true_or_false_is_not_taken_for_a_number():
    """Pydantic reads true as 1: `"epochs": true` in a config file trained one epoch without a word."""
    from pydantic import ValidationError

    from pipeline.config import PipelineConfig

    for bad in ({"train": {"epochs": True}}, {"train": {"num_threads": False}}, {"train": {"max_seconds": True}},
                {"model": {"dropout": False}}, {"data": {"download_timeout_s": True}}):
        with pytest.raises(ValidationError, match="expected a number, not (true|false)"):
            PipelineConfig.model_validate(bad)
    config = PipelineConfig.model_validate({"train": {"epochs": 3, "progress": False, "num_threads": None},
                                            "model": {"bidirectional": False, "dropout": 0}})
    assert (config.train.epochs, config.train.progress, config.model.bidirectional) == (3, False, False)
    with pytest.raises(ValidationError, match="expected a number"):
        config.train.epochs = True  # as the CLI's options are set over a --config file


def _libgomp_spin_count(code: str, **env: str) -> str:
    """GOMP_SPINCOUNT as PyTorch's libgomp read it when it loaded, in a fresh process running `code`
    (libgomp prints its settings as it loads when asked to; the Linux wheels pinned here ship it)."""
    import os
    import re
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT" and not k.startswith("OMP_")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, "OMP_DISPLAY_ENV": "verbose", **env},
                          capture_output=True, text=True, timeout=120, check=True)
    found = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)
    assert found, "torch loaded no libgomp: the spin setting has nothing to act on; " + done.stderr[-500:]
    return found[-1]


@pytest.mark.parametrize("entry", ["flows.cli", "flows.serve", "pipeline.pyfunc_entry", "pipeline.train"])
def test_pytorch_threads_spin_briefly_from_every_entry_point(entry):
    """libgomp's default, 300,000 spins, made an epoch 3 to 30 times slower whenever another process
    held one of the cores; it reads the setting once, when torch loads it, so each entry point must
    set it before importing torch."""
    assert _libgomp_spin_count(f"import {entry}, torch") == "1000"


def test_a_spin_count_or_wait_policy_the_user_set_wins():
    assert _libgomp_spin_count("import torch") == "300000"  # libgomp's own default: the tests can tell
    assert _libgomp_spin_count("import pipeline, torch", GOMP_SPINCOUNT="20000") == "20000"
    assert _libgomp_spin_count("import pipeline, torch", OMP_WAIT_POLICY="passive") == "0"


def test_models_are_saved_beside_the_processed_data_unless_told_where(small_data, tmp_path):
    """`data.models_dir` defaults to `models/` beside `processed_dir`, as it was before it was a setting:
    a configuration that named only processed_dir keeps its models where they were."""
    from pipeline.config import PipelineConfig
    from pipeline.workflow import model_dir

    config = PipelineConfig(data=DataConfig(processed_dir=tmp_path / "out" / "processed"))
    assert model_dir(config, small_data).parent == tmp_path / "out" / "models"
    config.data.models_dir = tmp_path / "elsewhere"
    assert model_dir(config, small_data).parent == tmp_path / "elsewhere"


def test_the_thread_setting_is_set_within_its_block_and_given_back():
    """`cpu_threads` sets a count and gives the caller's back; unset, it leaves the count alone (neither every
    core nor anything else). That a whole run keeps it: tests/test_registry.py."""
    from pipeline.train import cpu_threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with cpu_threads(TrainConfig(num_threads=1).num_threads):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)  # not every core (which training's own default would set)
        with cpu_threads(TrainConfig().num_threads):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
