"""Tracking, packaging, registry gate, CLI prediction and REST serving, against a real SQLite store."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from flows.cli import app
from pipeline import workflow
from pipeline.errors import NamelangError, TrackingError
from pipeline.registry import CHALLENGER, CHAMPION, PromotionDecision, get_alias_version, load_model
from pipeline.tracking import MODEL_NAME, check_reachable, configure
from tests.support import (
    SHARED_NAMES,
    SMALL_LANGUAGES,
    free_port,
    self_signed_certificate,
    small_names_folder,
    stops_answering,
    tiny_config,
    wait_for_http,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A temporary SQLite tracking store with one trained, registered champion."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        configure()
        config = tiny_config(root, small_names_folder(root), epochs=6)
        summary = workflow.run_pipeline(config)
        labels = ["Arabic", "Chinese", "Greek", "Italian", "Japanese", "Russian"]
        champion = load_model("models:/namelang@champion")
        top = dict(zip(["Nakamura", "Papadopoulos", "Tanaka"], champion.predict(pd.DataFrame(
            {"name": ["Nakamura", "Papadopoulos", "Tanaka"]}))["language"], strict=True))
        yield {"root": root, "uri": uri, "config": config, "summary": summary, "labels": labels, "top": top}


@pytest.fixture
def own_tempdir(tmp_path, monkeypatch) -> Path:
    """This process's temporary folder for one test (tempfile's, where MLflow downloads what it reads
    back), so that the test can see what was left in it (`_left_in`)."""
    folder = tmp_path / "tempdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _left_in(folder: Path) -> list[Path]:
    """What is left in a temporary folder, but PyTorch's compile cache (made there once, kept on purpose)."""
    return [p for p in folder.iterdir() if p.name != "torchinductor_root"]


def test_run_logs_params_curves_dataset_and_artifacts(store, tmp_path):
    client = MlflowClient()
    run = client.get_run(store["summary"]["run_id"])
    assert run.data.params["train.epochs"] == "6"
    assert run.data.params["model.cell"] == store["config"].model.cell
    history = client.get_metric_history(run.info.run_id, "val_macro_f1")
    assert [m.step for m in history] == list(range(1, len(history) + 1)) and len(history) >= 2
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == len(history)
    assert run.data.metrics["test_macro_f1"] == pytest.approx(store["summary"]["test_macro_f1"], abs=1e-4)
    from pipeline.normalize import read_provenance

    table_sha256 = read_provenance(store["config"].data.processed_dir / "names.parquet")["content_sha256"]
    assert run.data.tags["namelang.data_sha256"] == table_sha256
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == run.data.tags["namelang.data_sha256"][:36]
    names = pq.read_table(store["config"].data.processed_dir / "names.parquet")
    assert json.loads(dataset_input.dataset.profile) == {"num_rows": names.num_rows,
                                                          "num_elements": names.num_rows * names.num_columns}
    assert [c["name"] for c in json.loads(dataset_input.dataset.schema)["mlflow_colspec"]] == names.column_names
    artifacts = {a.path for folder in ("evaluation", "data") for a in client.list_artifacts(run.info.run_id, folder)}
    for name in ("evaluation/confusion_matrix.png", "evaluation/model_card.md", "evaluation/per_language.csv",
                 "evaluation/misclassified.csv", "data/provenance.json", "data/quality.md"):
        assert name in artifacts
    card = Path(client.download_artifacts(run.info.run_id, "evaluation/model_card.md", str(tmp_path))).read_text()
    assert run.data.tags["namelang.data_sha256"] in card
    assert "| language" in card and "| Japanese" in card  # the per-language table, as Markdown
    assert f"macro-F1 {run.data.metrics['test_macro_f1']:.4f}" in card
    assert re.search(r"## Metrics \(test split, \d+ rows: distinct \(name, language\) pairs\)", card), card[:2000]
    assert "ngram_models_counted: train + validation" in card
    # the model's pins install from PyPI: torch's local label (+cpu) exists only on PyTorch's index
    requirements = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}/1/requirements.txt",
                                                            dst_path=str(tmp_path))).read_text()
    pins = dict(line.split("==") for line in requirements.split() if "==" in line)
    assert pins.keys() >= {"torch", "mlflow"} and not any("+" in v for v in pins.values()), requirements


def test_a_run_names_its_process_so_a_later_one_can_tell_it_died(store, monkeypatch):
    """Host, machine, boot, pid namespace, pid and start time: a pid reused by a later process, a zombie,
    or a process of an earlier boot is a dead run's; a run of another host, machine (of the same name:
    its other boot id was read as a reboot) or pid namespace (a container with the host's name), or without
    the tags, cannot be judged here and is taken as alive; a clock
    stepped since (NTP, a resumed VM) does not make a live process look new."""
    import psutil

    from pipeline.liveness import (
        BOOT_TAG,
        HOST_TAG,
        MACHINE_TAG,
        PID_NAMESPACE_TAG,
        PID_TAG,
        STARTED_TAG,
        process_gone,
        this_process,
    )

    tags = MlflowClient().get_run(store["summary"]["run_id"]).data.tags
    assert tags[PID_TAG] == str(os.getpid()) and not process_gone(tags)
    me = this_process()
    assert process_gone({**me, STARTED_TAG: "1.0"})  # the pid, reused since
    assert process_gone({**me, BOOT_TAG: "an-earlier-boot"})
    # another machine of the same name (and, as every Linux machine's first, the same pid namespace number)
    another = {MACHINE_TAG: "0" * 32, BOOT_TAG: "its-own-boot"}
    for elsewhere in ({HOST_TAG: "elsewhere"}, {PID_NAMESPACE_TAG: "4:4026532999"}, another):
        assert not process_gone({**me, **elsewhere, STARTED_TAG: "1.0"})
    assert process_gone({k: v for k, v in {**me, STARTED_TAG: "1.0"}.items() if k != MACHINE_TAG})  # an older run's
    assert not process_gone({}) and not process_gone({**me, PID_TAG: "not a pid"})
    if sys.platform == "linux":  # psutil adds the boot time, which a clock step moves
        boot = psutil._pslinux.boot_time()
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: boot + 3600)
        assert psutil.Process().create_time() > float(me[STARTED_TAG]) + boot + 3000  # the step shows
        assert not process_gone(me)
        monkeypatch.undo()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = {**me, PID_TAG: str(child.pid),
                   STARTED_TAG: repr(psutil.Process(child.pid).create_time() - psutil.boot_time())}
        assert not process_gone(started)
        child.kill()
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_gone(started)  # killed, not yet reaped by its parent
    finally:
        child.kill()
        child.wait()
    assert process_gone(started)


def test_first_model_is_champion_with_gate_tags(store):
    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert str(version.version) == store["summary"]["version"] == "1"
    assert version.tags["gate.decision"] == "promoted to champion: no champion before it"
    run_tags = client.get_run(store["summary"]["run_id"]).data.tags
    assert run_tags["namelang.alias_at_registration"] == CHAMPION and "namelang.alias" not in run_tags
    assert float(version.tags["gate.new_macro_f1"]) == pytest.approx(store["summary"]["test_macro_f1"], abs=1e-4)
    assert f"macro-F1 {float(version.tags['gate.new_macro_f1']):.4f}" in version.description
    assert store["summary"]["run_id"] in version.description
    assert "surname" in client.get_registered_model(MODEL_NAME).description
    checkpoints = store["config"].train.checkpoint_dir
    assert checkpoints.is_dir() and not list(checkpoints.glob("*.pt"))  # registered: its checkpoint is deleted


def test_gate_keeps_champion_when_new_model_is_worse(store, tmp_path):
    root = store["root"]
    worse = tiny_config(root, store["config"].data.source, epochs=1, learning_rate=1e-6,
                        checkpoint_dir=tmp_path / "kept", keep_checkpoint=True)
    worse.train.class_weighting = False
    summary = workflow.run_pipeline(worse)
    assert len(list((tmp_path / "kept").glob("train-*.pt"))) == 1  # kept when asked to
    client = MlflowClient()
    assert summary["alias"] == CHALLENGER
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == "1"
    new = client.get_model_version(MODEL_NAME, summary["version"])
    assert CHALLENGER in new.aliases
    assert float(new.tags["gate.champion_macro_f1"]) > float(new.tags["gate.new_macro_f1"])
    assert new.tags["gate.previous_champion"] == "1"


def test_gate_leaves_out_test_names_the_champion_learnt_from(store, tmp_path, monkeypatch):
    """Another split seed on the same names: most of the new test split is names the champion was
    trained on. Both models are compared on the rest only, or the champion is judged flattered. The
    new version is scored from evaluation's predictions: only the champion is loaded to be scored."""
    from pipeline import registry
    from pipeline.features import TEST, load_tensors
    from pipeline.registry import learnt_names, score_model

    loaded: list[str] = []
    real_load = registry.load_model
    monkeypatch.setattr(registry, "load_model",
                        lambda uri, *args, **kw: loaded.append(uri) or real_load(uri, *args, **kw))

    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    learnt = learnt_names(client, champion.run_id)
    champion_data = load_tensors(store["config"].data.processed_dir / "tensors.pt")
    assert learnt == {champion_data.names[i] for i in champion_data.indices(0, 1).tolist()}  # train + validation
    other = tiny_config(tmp_path, store["config"].data.source, epochs=1, learning_rate=1e-6)  # poor: champion stays
    other.split.seed = store["config"].split.seed + 1
    summary = workflow.run_pipeline(other)
    assert loaded == [f"models:/{MODEL_NAME}/{champion.version}"]  # the new version is not loaded back
    data = load_tensors(other.data.processed_dir / "tensors.pt")
    test = data.indices(TEST).tolist()
    unseen = [i for i in test if data.names[i] not in learnt]
    assert 0 < len(unseen) < len(test)
    tags = client.get_model_version(MODEL_NAME, summary["version"]).tags
    assert (int(tags["gate.compared_names"]), int(tags["gate.excluded_names"])) == (len(unseen),
                                                                                    len(test) - len(unseen))
    languages = [data.label_names[int(data.labels[i])] for i in unseen]
    expected = score_model(f"models:/{MODEL_NAME}/{champion.version}", [data.names[i] for i in unseen], languages)
    assert float(tags["gate.champion_macro_f1"]) == pytest.approx(expected, abs=1e-12)
    as_registered = score_model(f"models:/{MODEL_NAME}/{summary['version']}", [data.names[i] for i in unseen],
                                languages)
    assert float(tags["gate.new_macro_f1"]) == pytest.approx(as_registered, abs=1e-12)
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(champion.version)


def test_gate_leaves_out_test_names_the_new_version_learnt_from_too(store, tmp_path):
    """The notebook's random split of lines puts copies of a name on both sides: the new version was
    judged on test names it had trained on (58 of 376 rows in a real run), and so flattered."""
    from pipeline.features import TEST, load_tensors
    from pipeline.registry import learnt_names

    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    champion_learnt = learnt_names(client, champion.run_id)
    doubled = tmp_path / "doubled"  # every line twice, as the real files have copies
    doubled.mkdir()
    for file in Path(store["config"].data.source).glob("*.txt"):
        (doubled / file.name).write_text(file.read_text(encoding="utf-8") * 2, encoding="utf-8")
    leaky = tiny_config(tmp_path, doubled, epochs=1, learning_rate=1e-6)
    leaky.split.method = "random_lines"
    summary = workflow.run_pipeline(leaky)
    data = load_tensors(leaky.data.processed_dir / "tensors.pt")
    own = {data.names[i] for i in data.indices(0, 1).tolist()}
    assert learnt_names(client, client.get_model_version(MODEL_NAME, summary["version"]).run_id) == own
    test = [data.names[i] for i in data.indices(TEST).tolist()]
    assert any(n in own and n not in champion_learnt for n in test)  # the case: learnt by the new version only
    compared = [n for n in test if n not in own and n not in champion_learnt]
    tags = client.get_model_version(MODEL_NAME, summary["version"]).tags
    assert (int(tags["gate.compared_names"]), int(tags["gate.excluded_names"])) == (len(compared),
                                                                                    len(test) - len(compared))


def test_the_gate_takes_a_name_learnt_in_another_case_for_learnt(store, tmp_path):
    """The split keeps "An" and "an" on one side; the gate, comparing with what the champion learnt,
    must read names the same way, or the champion is judged on names it learnt ("Nakamura" learnt,
    "nakamura" tested)."""
    from pipeline.features import TEST, load_tensors
    from pipeline.registry import learnt_names, rows_new_to

    assert rows_new_to(["An", "Smith", "NAKAMURA", "Tanaka", "an"], {"an", "Nakamura", "Jones"}) == [1, 3]
    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    champion_learnt = {n.lower() for n in learnt_names(client, champion.run_id)}
    lowered = tmp_path / "lowered"  # the champion's names, typed in lower case
    lowered.mkdir()
    for file in Path(store["config"].data.source).glob("*.txt"):
        (lowered / file.name).write_text(file.read_text(encoding="utf-8").lower(), encoding="utf-8")
    other = tiny_config(tmp_path, lowered, epochs=1, learning_rate=1e-6)
    other.split.seed = store["config"].split.seed + 1
    try:  # on 10 lower-case names the champion may score no better: the module's champion is put back
        summary = workflow.run_pipeline(other)
    finally:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, champion.version)
    data = load_tensors(other.data.processed_dir / "tensors.pt")
    test = [data.names[i] for i in data.indices(TEST).tolist()]
    known = [n for n in test if n in champion_learnt]
    assert 0 < len(known) < len(test) and all(n == n.lower() for n in test)
    tags = client.get_model_version(MODEL_NAME, summary["version"]).tags
    assert (int(tags["gate.compared_names"]), int(tags["gate.excluded_names"])) == (len(test) - len(known),
                                                                                    len(known))


def test_gate_keeps_champion_when_no_test_name_is_new_to_both_models(store, tmp_path, capsys, monkeypatch):
    """Retrained on a subset of the champion's own training names (files lost in a partial sync, say),
    every new test name is one the champion learnt: there is no evidence either way, and the new
    version used to take the alias unjudged. The champion stays; the new version is challenger."""
    import pyarrow as pa

    from flows.cli import _print_training_summary
    from pipeline.normalize import to_ascii
    from pipeline.registry import learnt_names

    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)  # an earlier test's, maybe
    learnt = learnt_names(client, champion.run_id)
    subset = tmp_path / "subset"
    subset.mkdir()
    for file in Path(store["config"].data.source).glob("*.txt"):  # every champion so far learnt from these names
        lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line, ascii in zip(lines, to_ascii(pa.array(lines)).to_pylist(), strict=True)
                if ascii in learnt]
        (subset / file.name).write_text("\n".join(kept) + "\n", encoding="utf-8")
    seen = []  # and `--threads 1` holds for the whole run: evaluation and the gate as well as training

    def counted(step):
        @functools.wraps(step)
        def step_counting_threads(*args, **kwargs):
            seen.append((step.__name__, torch.get_num_threads()))
            return step(*args, **kwargs)
        return step_counting_threads

    monkeypatch.setattr(workflow, "evaluate_model", counted(workflow.evaluate_model))
    monkeypatch.setattr(workflow, "promote_if_better", counted(workflow.promote_if_better))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        summary = workflow.run_pipeline(tiny_config(tmp_path, subset, epochs=2, num_threads=1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert seen == [("evaluate_model", 1), ("promote_if_better", 1)]
    assert summary["alias"] == CHALLENGER
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(champion.version)
    tags = client.get_model_version(MODEL_NAME, summary["version"]).tags
    assert tags["gate.compared_names"] == "0" and int(tags["gate.excluded_names"]) > 0
    assert tags["gate.decision"] == (f"challenger; the champion stays: not compared: all {tags['gate.excluded_names']} "
                                     f"test rows are names champion version {champion.version} or this one learnt from")
    _print_training_summary({**summary, "data_steps": "ran", "mlflow_tracking_uri": store["uri"]})  # as the flow adds
    out = capsys.readouterr().out
    assert f"gate: not compared: all {tags['gate.excluded_names']} test rows" in out
    assert f"namelang promote {summary['version']}" in out


def test_gate_keeps_champion_when_the_new_version_knows_fewer_languages(store, tmp_path, capsys):
    """Trained on two of the champion's six languages, a version scores well on a test split of those
    two alone, and took the alias: then every name was Italian or Russian to it. It stays challenger."""
    from flows.cli import _print_training_summary

    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)  # an earlier test's, maybe
    two = tmp_path / "two"
    two.mkdir()
    for language in ("Italian", "Russian"):  # names the champion never saw: beyond the fixture's first 60
        lines = (SHARED_NAMES / f"{language}.txt").read_text(encoding="utf-8").splitlines()[60:260]
        (two / f"{language}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = workflow.run_pipeline(tiny_config(tmp_path, two, epochs=4))
    assert summary["alias"] == CHALLENGER
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(champion.version)
    tags = client.get_model_version(MODEL_NAME, summary["version"]).tags
    assert json.loads(tags["gate.missing_languages"]) == ["Arabic", "Chinese", "Greek", "Japanese"]
    assert tags["gate.decision"] == (f"challenger; the champion stays: not compared: it does not know 4 of champion "
                                     f"version {champion.version}'s languages (Arabic, Chinese, Greek, Japanese)")
    _print_training_summary({**summary, "data_steps": "ran", "mlflow_tracking_uri": store["uri"]})  # as the flow adds
    out = capsys.readouterr().out
    assert f"gate: not compared: it does not know 4 of champion version {champion.version}'s" in out
    from pipeline.errors import NamelangWarning
    from pipeline.registry import promote

    try:  # made champion by hand all the same (a rollback is deliberate): said, not refused
        with pytest.warns(NamelangWarning, match=rf"version {summary['version']} does not know 4 of version "
                          rf"{champion.version}'s languages \(Arabic, Chinese, Greek, Japanese\): names of those "
                          "are now answered with others"):
            assert promote(summary["version"]) == str(champion.version)
    finally:
        promote(str(champion.version))
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(champion.version)
    assert f"namelang promote {summary['version']}" in out


def test_a_champion_that_cannot_be_loaded_or_whose_learnt_names_are_gone_is_not_judged(store, tmp_path):
    """A champion whose files were deleted failed every later training at the gate (after registering
    its version); one whose run was deleted was scored on all test names, those it learnt from too,
    and so kept its alias flattered. Neither is compared now: the reason says why."""
    import shutil

    from pipeline.registry import promote_if_better

    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    candidate = mlflow.register_model(champion.source, MODEL_NAME)  # learnt what the champion learnt
    names = _names_new_to(client, champion, count=10)
    judge = functools.partial(promote_if_better, str(candidate.version), names, ["Japanese"] * 10,
                              ["Japanese"] * 10, languages=store["labels"])
    files = tmp_path / "model"
    shutil.copytree(mlflow.artifacts.download_artifacts(champion.source, dst_path=str(tmp_path / "download")), files)
    gone = mlflow.register_model(str(files), MODEL_NAME, tags={"gone": "files"})
    shutil.rmtree(files)
    # a run that kept no record of learnt names (an older namelang's)
    unrecorded = client.create_run(client.get_experiment_by_name(MODEL_NAME).experiment_id)
    client.set_terminated(unrecorded.info.run_id)
    forgot = client.create_model_version(MODEL_NAME, champion.source, run_id=unrecorded.info.run_id)
    try:
        for stand_in, why in ((gone, "cannot be loaded (cannot load model: No such artifact"),
                              (forgot, "has no record of the names it learnt from")):
            client.set_registered_model_alias(MODEL_NAME, CHAMPION, stand_in.version)
            decision = judge()
            assert (decision.alias, decision.previous_champion) == (CHALLENGER, str(stand_in.version))
            assert decision.reason().startswith(f"not compared: champion version {stand_in.version} {why}"), decision
            tags = client.get_model_version(MODEL_NAME, candidate.version).tags
            assert tags["gate.decision"] == f"challenger; the champion stays: {decision.reason()}"
            assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(stand_in.version)
            client.delete_model_version_tag(MODEL_NAME, candidate.version, "gate.alias")  # judged afresh next
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, champion.version)  # the real champion: compared
        assert judge().compared_names == 10
    finally:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, champion.version)
        for version in (candidate, gone, forgot):
            client.delete_model_version(MODEL_NAME, version.version)


def test_a_run_records_the_quality_report_of_the_table_it_trained_on(store, tmp_path):
    """An ingest of another source during a training replaced data/processed/quality.*, and the run
    logged that report (3 languages) beside a model of 6: the MLflow UI and Prefect's disagreed."""
    config = tiny_config(tmp_path, small_names_folder(tmp_path), epochs=1)
    table = workflow.normalize_names(workflow.ingest_source(config.data, workflow.fetch_source(config.data)),
                                     config.data)
    workflow.write_table(table, config.data)
    data = workflow.build_tensors(table, config.split)
    run = workflow.start_run(config, table)
    result = workflow.train(data, config, run)
    other = small_names_folder(tmp_path / "other", languages=("Italian", "Russian"))  # ingested meanwhile
    other_config = config.model_copy(update={"data": config.data.model_copy(update={"source": str(other)})})
    workflow.write_table(workflow.normalize_names(workflow.ingest_source(other_config.data, other), other_config.data),
                         other_config.data)
    workflow.evaluate_model(result, data, table, config, run)
    run.finish()
    read = functools.partial(MlflowClient().download_artifacts, run.run_id, dst_path=str(tmp_path))
    logged = json.loads(Path(read("data/quality.json")).read_text())
    assert logged == table.quality and logged["languages"] == 6
    assert "- languages: 6," in Path(read("data/quality.md")).read_text()


_OPEN_A_NEW_STORE = """
import sys
from mlflow import MlflowClient
from pipeline.tracking import configure, experiment_id
print(experiment_id(MlflowClient(configure(sys.argv[1]))))
"""


def test_first_trainings_at_once_set_up_a_new_store_one_at_a_time(tmp_path):
    """Two first trainings at once both created and migrated the new SQLite store's tables, failed
    ("table _alembic_tmp_params already exists", alembic's "expected to match one row"), and could
    leave it half-migrated for good; such a store is now one line."""
    import sqlite3

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    opening = [subprocess.Popen([sys.executable, "-c", _OPEN_A_NEW_STORE, uri], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(3)]
    done = [proc.communicate(timeout=300) for proc in opening]
    assert [proc.returncode for proc in opening] == [0, 0, 0], [err[-2000:] for _, err in done]
    assert {out.strip() for out, _ in done} == {"1"}  # one experiment, the same for all
    # a store a failed set-up left half-migrated: its migration's temp table there, a revision behind
    database = sqlite3.connect(tmp_path / "mlruns" / "mlflow.db")
    database.execute("UPDATE alembic_version SET version_num = '0c779009ac13'")  # before params' batch migration
    database.execute("CREATE TABLE _alembic_tmp_params (x int)")
    database.execute("DROP TABLE mcp_servers")  # a table of a later migration: MLflow migrates again
    database.commit()
    database.close()
    broken = subprocess.run([sys.executable, "-c", _OPEN_A_NEW_STORE, uri], env=env, capture_output=True, text=True,
                            timeout=300)
    assert broken.returncode == 1 and broken.stderr.strip().splitlines()[-1].endswith(
        "mlflow.db: MLflow could not set up its tables in this store ((sqlite3.OperationalError) table "
        "_alembic_tmp_params already exists); one left half-made by a first set-up that failed: if it holds no runs "
        "yet, move it aside and run again"), broken.stderr[-2000:]
    not_a_store = tmp_path / "other" / "mlflow.db"  # a file of something else where the store should be
    not_a_store.parent.mkdir()
    not_a_store.write_text("name,language\nSmith,English\n" * 10)
    refused = subprocess.run([sys.executable, "-c", _OPEN_A_NEW_STORE, f"sqlite:///{not_a_store}"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1].endswith(
        "mlflow.db: MLflow could not open this store ((sqlite3.DatabaseError) file is not a database)"), \
        refused.stderr[-2000:]


def test_the_store_is_read_where_sqlalchemy_reads_it_and_a_folder_it_cannot_make_is_one_line(tmp_path, monkeypatch):
    """A URI's `?timeout=30` was taken for part of the file's name ("no MLflow store here"); a checkout
    under `p%41q` opened `pAq`'s store, MLflow making the folder as written and SQLAlchemy reading the URL;
    a file where the store's folder goes was a traceback, retried three times by the flow."""
    from pipeline.tracking import configure, default_tracking_uri, sqlite_file

    assert sqlite_file("sqlite:////srv/mlruns/mlflow.db?timeout=30") == Path("/srv/mlruns/mlflow.db")
    assert sqlite_file("sqlite:///mlruns/mlflow.db") == Path("mlruns/mlflow.db")
    assert sqlite_file("http://127.0.0.1:5000") is None
    for odd in ("p%41q", "a?b"):
        (tmp_path / odd).mkdir()
        monkeypatch.chdir(tmp_path / odd)
        with pytest.raises(NamelangError, match=r"this store's path holds a '%' or a '\?' .* read differently"):
            configure(default_tracking_uri())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a?b", "p%41q"]  # nothing made, here nor beside
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(NamelangError, match=r"afile: cannot make the MLflow store's folder \(File exists\)"):
        configure(f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}")
    # a space, '#', '@', a letter beyond ASCII: the store where the checkout is, as MLflow itself makes it
    checkout = tmp_path / "my names #1 @café"
    checkout.mkdir()
    opened = subprocess.run([sys.executable, "-c", "from pipeline.tracking import configure; print(configure())"],
                            cwd=checkout, capture_output=True, text=True, timeout=120,
                            env={**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
                                 "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert opened.returncode == 0, opened.stderr[-2000:]
    assert sqlite_file(opened.stdout.strip()) == checkout / "mlruns" / "mlflow.db" and (
        checkout / "mlruns" / "mlflow.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a?b", "afile", "my names #1 @café", "p%41q"]


def test_an_experiment_another_process_made_first_is_used(tmp_path):
    """Two first trainings at once: both found no experiment, and the second to create it failed
    (RESOURCE_ALREADY_EXISTS), with a traceback and a retry in the flow."""
    from pipeline.tracking import experiment_id

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    made = client.create_experiment("namelang-race")  # by the other process, after this one looked
    looked, calls = client.get_experiment_by_name, []

    def before_the_other_made_it(name):  # this process's first look came before the other's create
        calls.append(name)
        return None if len(calls) == 1 else looked(name)

    client.get_experiment_by_name = before_the_other_made_it
    assert experiment_id(client, "namelang-race") == made and len(calls) == 2


def test_one_gate_at_a_time_on_a_sqlite_store(store, monkeypatch):
    """Two runs judged at once both compared against the old champion; the later took the alias."""
    import filelock

    from pipeline import registry

    monkeypatch.setattr(registry, "GATE_LOCK_TIMEOUT_S", 0.5)
    database = store["uri"].removeprefix("sqlite:///")
    with (filelock.FileLock(f"{database}.{MODEL_NAME}-gate.lock"),  # another run is passing the gate
          pytest.raises(TrackingError, match="another run held the promotion gate")):
        registry.promote_if_better("1", ["Rossi"], ["Italian"], ["Italian"], languages=store["labels"])
    assert registry.promote_if_better("1", ["Rossi"], ["Italian"], ["Italian"],
                                      languages=store["labels"]).alias == CHAMPION  # free again


def test_promote_by_hand_moves_the_champion_and_rolls_back(store, monkeypatch):
    """The gate's `challenger` made champion on purpose, then the old champion back (a rollback)."""
    import filelock

    from pipeline import registry

    client = MlflowClient()
    old = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)  # an earlier test's, maybe
    new = client.create_model_version(MODEL_NAME, source=old.source, run_id=old.run_id)  # a real version
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, new.version)  # as the gate leaves it
    runner = CliRunner()
    try:
        result = runner.invoke(app, ["promote", str(new.version)])
        assert result.exit_code == 0, result.output
        assert f"is now version {new.version} (was version {old.version}); a running `namelang serve` serves it " \
               "once restarted" in result.output
        promoted = client.get_model_version(MODEL_NAME, new.version)
        assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(new.version)
        assert CHALLENGER not in promoted.aliases  # one version is not both
        assert promoted.tags["champion.set_by_hand"].endswith(f"over version {old.version}")
        again = runner.invoke(app, ["promote", str(new.version)])
        assert again.exit_code == 0 and "already" in again.output
        for bad, says in (("999", "has no version 999; its aliases: @champion"), ("v2", "a model version is a number"),
                          ("²", "a model version is a number")):
            refused = runner.invoke(app, ["promote", bad])
            assert refused.exit_code == 2 and says in refused.output, refused.output
        monkeypatch.setattr(registry, "GATE_LOCK_TIMEOUT_S", 0.5)
        with filelock.FileLock(f"{store['uri'].removeprefix('sqlite:///')}.{MODEL_NAME}-gate.lock"):  # a gate runs
            busy = runner.invoke(app, ["promote", str(old.version)])
        assert busy.exit_code == 2 and "another run held the promotion gate" in busy.output
        assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(new.version)
    finally:
        back = runner.invoke(app, ["promote", str(old.version)])
    assert back.exit_code == 0 and f"is now version {old.version} (was version {new.version})" in back.output
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(old.version)


def test_champion_loads_and_predicts_in_fresh_process_outside_repo(store, tmp_path):
    script = textwrap.dedent("""
        import json, sys, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/namelang@champion")
        out = model.predict(pd.DataFrame({"name": ["Nakamura", "Ślusàrski", ""]}))
        import pipeline
        print(json.dumps({"modules": sorted(m for m in sys.modules if m.startswith("pipeline")),
                          "pipeline_file": pipeline.__file__, "rows": out.to_dict("records")}, default=str))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GOMP_SPINCOUNT")}
    env.update(MLFLOW_TRACKING_URI=store["uri"], CUDA_VISIBLE_DEVICES="", OMP_DISPLAY_ENV="verbose")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the model's code set PyTorch's threads to spin briefly before mlflow's loading imported torch
    assert re.findall(r"GOMP_SPINCOUNT = '(\d+)'", proc.stderr) == ["1000"], proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = result["rows"]
    expected = load_model("models:/namelang@champion").predict(pd.DataFrame({"name": ["Nakamura"]}))
    assert rows[0]["language"] == expected["language"][0]
    assert rows[0]["probability"] == pytest.approx(expected["probability"][0], abs=1e-6)
    assert rows[0]["language_2"] and rows[0]["language_3"]
    assert rows[1]["error"] is None and rows[1]["language"]  # JSON null: not "None", not NaN
    # the model's own copy of the code (its code_paths), not the checkout this test runs from
    assert not Path(result["pipeline_file"]).resolve().is_relative_to(Path(__file__).resolve().parents[1]), result
    assert "pipeline.pyfunc" in result["modules"]
    assert rows[2]["error"] == "empty name"


def test_pyfunc_bad_input_gives_per_row_errors(store):
    model = load_model("models:/namelang@champion")
    out = model.predict(pd.DataFrame({"name": ["Иванов", "x" * 10_000, "   ", "___", "Tanaka"]}))
    assert list(out["error"][:4]) == ["no Latin letters after normalization",
                                      "name longer than 64 characters (10000)", "empty name",
                                      "no Latin letters after normalization"]
    assert out["language"][:4].isna().all() and out["language"][4] in store["labels"]
    # the training table rejects control characters; so does prediction, rather than guess
    assert model.predict(pd.DataFrame({"name": ["Tan\x07aka"]}))["error"][0] == "control characters in the name"
    with pytest.raises(MlflowException, match=r"missing inputs \['name'\]"):
        model.predict(pd.DataFrame({"surname": ["Tanaka"]}))
    with pytest.raises(MlflowException, match="Incompatible input types for column name"):  # the schema's
        model.predict(pd.DataFrame({"name": [12]}))
    # the answer keeps the input's index: assigned back to a filtered frame, it lines up (it was NaN)
    frame = pd.DataFrame({"name": ["Hinton", "", "Tanaka"]}, index=[20, 30, 40])
    frame["language"] = model.predict(frame)["language"]
    assert frame["language"].notna().tolist() == [True, False, True]


def test_a_dict_of_names_is_one_row_per_name(store):
    """MLflow hands `{"name": [...]}` to the model as one row holding the list: it was one row, the
    list's text as its name, "name must be a string, got list"."""
    model = load_model("models:/namelang@champion")
    out = model.predict({"name": ["Nakamura", "Tanaka", ""]})
    assert out["name"].tolist() == ["Nakamura", "Tanaka", ""]
    assert out["language"][0] == store["top"]["Nakamura"] and out["error"].tolist() == [None, None, "empty name"]
    assert out.equals(model.predict(pd.DataFrame({"name": ["Nakamura", "Tanaka", ""]})))
    assert model.predict({"name": []}).empty and model.predict({"name": "Tanaka"})["language"][0]


def test_model_uris_of_the_wrong_shape_are_said_to_be_so_not_a_store_failure(store, own_tempdir):
    """They read "the model store failed while loading the model" (a retry would not help), or a bare
    "not enough values to unpack". A runs:/ model, which MLflow copies even off a local store, leaves
    no copy behind."""
    run_id = store["summary"]["run_id"]
    for uri, said in ((f"runs:/{run_id}", "a runs:/ URI names the model's path in the run too"),
                      ("models:/namelang/Production", "model 'namelang' in the registry at"),
                      ("http://127.0.0.1:5000/invocations", "a web address is not a model URI"),
                      ("", "no model URI given"),
                      # an object store whose client library is not installed: its traceback, through `namelang serve`
                      ("s3://bucket/model", "s3://bucket/model: cannot load model: ModuleNotFoundError: No module "
                                            "named 'botocore' (the library MLflow reads this store with is not "
                                            "installed)")):
        result = CliRunner().invoke(app, ["predict", "Tanaka", "--model", uri])
        assert result.exit_code == 2 and said in result.output and "store failed" not in result.output, result.output
    assert CliRunner().invoke(app, ["predict", "Tanaka", "--model", f"runs:/{run_id}/model"]).exit_code == 0
    assert not _left_in(own_tempdir)
    # a registry that has versions has a latest: "no version latest ... e.g. models:/namelang/<that one>" was said
    # when the newest version's files were gone from the store
    from pipeline.registry import ModelRef, missing_model_problem

    assert missing_model_problem(ModelRef("namelang", version="latest")) is None
    assert "has no version 99" in missing_model_problem(ModelRef("namelang", version="99"))
    # `namelang serve` checks its model in a child running this command: it printed the child's traceback
    checked = CliRunner().invoke(app, ["serving-environment", "s3://bucket/model"])
    assert checked.exit_code == 2 and checked.output.startswith("error: s3://bucket/model: cannot load model: ")
    # `latest` of a name MLflow's search cannot take (batch and serve pin it first): MLflow's traceback
    checked = CliRunner().invoke(app, ["serving-environment", "models:/a'b/latest"])
    assert checked.exit_code == 2 and checked.output.startswith(
        "error: models:/a'b/latest: cannot look up model \"a'b\": Invalid clause(s) in filter string"), checked.output


def test_batch_file_whose_first_chunk_has_no_errors(store, tmp_path):
    """Column types stay fixed across chunks: a clean first chunk must not make `error` a null column."""
    from pipeline.batch import predict_file

    source = tmp_path / "names.txt"
    source.write_text("Nakamura\nRossi\n\nSmith\n___\n", encoding="utf-8")
    heard: list[tuple[int, int]] = []
    stats = predict_file(load_model("models:/namelang@champion"), source, tmp_path / "out.parquet", "1",
                         chunk_size=2, on_chunk=lambda rows, errors: heard.append((rows, errors)))
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert stats["rows"] == len(out) == 5 and stats["errors"] == 2
    assert heard == [(2, 0), (4, 1), (5, 2)]  # running totals after each chunk: the flow logs them
    errors = out["error"].tolist()
    assert errors[2] == "empty name" and pd.isna(errors[3]) and errors[4] == "no Latin letters after normalization"
    assert pd.isna(errors[0]) and pd.isna(errors[1])
    assert out["language"].notna().tolist() == [True, True, False, True, False]


def test_cli_predict_prints_top_languages_and_json(store):
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "Nakamura", "Papadopoulos", "--top", "2"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"Nakamura: {store['top']['Nakamura']} (") and first.count("(") == 2
    result = runner.invoke(app, ["predict", "--json"], input="Nakamura\n\n  Tanaka\n")
    records = json.loads(result.output)
    assert [r["name"] for r in records] == ["Nakamura", "Tanaka"]
    assert len(records[0]["top"]) == 3 and records[0]["top"][0]["language"] == store["top"]["Nakamura"]
    assert sum(t["probability"] for t in records[1]["top"]) <= 1.0001
    for top in ("20", str(10**20)):  # more than it knows; the second counted up to it, for ever
        result = runner.invoke(app, ["predict", "Nakamura", "--top", top, "--json"])
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.output)[0]["top"]) == len(store["labels"])
    # a name a terminal would act on (an escape that clears the screen) is shown quoted, as it is
    result = runner.invoke(app, ["predict", "Hin\x1b[2Jton", "Nakamura"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[0].startswith("'Hin\\x1b[2Jton': error: control characters")
    names = store["root"] / "names.txt"
    names.write_text("Nakamura\n\nИванов\n", encoding="utf-8")
    result = runner.invoke(app, ["predict", "--file", str(names)])
    assert result.exit_code == 1  # one name could not be classified
    assert "Иванов: error: no Latin letters after normalization" in result.output
    # a file saved with a byte-order mark: the first name is the name, not "\ufeffNakamura"
    names.write_bytes("\ufeffNakamura\r\nTanaka\r\n".encode())
    result = runner.invoke(app, ["predict", "--file", str(names), "--json"])
    assert result.exit_code == 0, result.output
    assert [r["name"] for r in json.loads(result.output)] == ["Nakamura", "Tanaka"]
    names.write_bytes(b"Nakamura\nTana\xffka\n")
    result = runner.invoke(app, ["predict", "--file", str(names)])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {names}:2: not valid UTF-8 (byte 0xff: invalid start byte)"
    result = runner.invoke(app, ["predict"], input=b"Nakamura\nTana\xffka\n")  # standard input: the same reader
    assert result.exit_code == 2
    assert result.output.strip() == "error: <stdin>:2: not valid UTF-8 (byte 0xff: invalid start byte)"
    result = runner.invoke(app, ["predict", "", "Nakamura"])
    assert result.exit_code == 1 and result.output.splitlines()[0] == "'': error: empty name", result.output
    # an argument that is not UTF-8 (Python passes its byte as a lone surrogate): that name's error, not the command's
    result = runner.invoke(app, ["predict", os.fsdecode(b"Sm\xffith"), "Nakamura"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[0] == "Sm\\xffith: error: not valid UTF-8 (a byte that is no character)"
    assert result.output.splitlines()[1].startswith(f"Nakamura: {store['top']['Nakamura']} (")
    # an empty --file is an error, not a cue to read standard input (in a loop, the loop's own input)
    names.write_text("\n  \n", encoding="utf-8")
    result = runner.invoke(app, ["predict", "--file", str(names)], input="Nakamura\n")
    assert result.exit_code == 2 and result.output.strip() == f"error: {names}: no names in this file"


def test_cli_predict_loads_the_model_without_download_bars(store, monkeypatch):
    """From a tracking server MLflow drew some 28 progress-bar updates on stderr before the answer."""
    name, seen, real = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", [], mlflow.pyfunc.load_model
    monkeypatch.delenv(name, raising=False)  # as MLflow's loader reads it while it downloads
    monkeypatch.setattr(mlflow.pyfunc, "load_model",
                        lambda uri, **kw: seen.append(os.environ.get(name)) or real(uri, **kw))
    result = CliRunner().invoke(app, ["predict", "Nakamura"])
    assert result.exit_code == 0, result.output
    assert seen == ["false"] and name not in os.environ  # off while it loads, the process's own after


def test_cli_predict_unknown_alias_is_one_line(store):
    result = CliRunner().invoke(app, ["predict", "Smith", "--model", "models:/namelang@nosuchalias"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    # the model is there, the alias is not: the message lists what there is, rather than "train one"
    assert len(lines) == 1 and "has no alias @nosuchalias" in lines[0] and "@champion (version" in lines[0]
    assert "its versions: 1" in lines[0] and "models:/namelang/" in lines[0] and "make run" not in lines[0]
    for uri, missing in (("models:/namelang/999", "has no version 999;"),
                         ("models:/namelang", "has no version or alias;")):
        result = CliRunner().invoke(app, ["predict", "Smith", "--model", uri])
        assert result.exit_code == 2 and missing in result.output and "its versions: 1" in result.output, result.output
    for malformed in ("models:/namelang@", "models:/namelang/", "models:/@champion"):  # the user's to mend
        result = CliRunner().invoke(app, ["predict", "Smith", "--model", malformed])
        assert result.exit_code == 2 and result.output.strip() == f"error: {malformed}: bad model URI: expected " \
            "models:/<name>@<alias>, models:/<name>/<version> or models:/<name>/latest", result.output
    result = CliRunner().invoke(app, ["predict", "Smith", "--model", "models:/nosuch@champion"])
    assert result.exit_code == 2 and "no model 'nosuch' in the registry" in result.output, result.output
    top = CliRunner().invoke(app, ["predict", "Smith", "--top", "0"])
    assert top.exit_code == 2 and "--top" in top.output


def test_no_store_yet_tells_how_to_train(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["predict", "Smith"])
    assert result.exit_code == 2 and "make run" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "mlruns").exists()


def test_a_model_folder_needs_no_tracking_store(store, tmp_path, monkeypatch):
    """A model copied off the store (or saved by mlflow.pyfunc.save_model) predicts where there is no store:
    `--model FOLDER` was refused with "no MLflow store here"."""
    folder = mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@{CHAMPION}", dst_path=str(tmp_path / "m"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["predict", "--model", folder, "--json", "Nakamura"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["top"][0]["language"] == store["top"]["Nakamura"]
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "mlruns").exists()


def test_a_team_tracking_server_takes_runs_artifacts_models_and_the_gate(tmp_path, monkeypatch, capfd, own_tempdir):
    """`MLFLOW_TRACKING_URI=http://...`: a real `mlflow server` on 127.0.0.1. Artifacts go through it
    to its own store (nothing under the working directory), the gate runs without a lock file (a
    server store has none) and judges the second version, and the champion loads back through it."""
    server_root = tmp_path / "server"
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # MLflow sets it for this process: put back after
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{server_root / 'mlflow.db'}",
             "--artifacts-destination", str(server_root / "artifacts")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", proc=server)
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        # with a password, as a team's server behind a proxy may take: MLflow's "View run at" lines printed it
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:s3cret@127.0.0.1:{port}")
        config = tiny_config(work, small_names_folder(work), epochs=3)
        try:
            first, second = workflow.run_pipeline(config), workflow.run_pipeline(config)
        finally:
            os.environ.pop("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", None)  # set by configure, for this process
        printed = capfd.readouterr()
        assert "s3cret" not in printed.out + printed.err
        assert (first["version"], first["alias"]) == ("1", CHAMPION)
        assert second["version"] == "2" and second["alias"] in (CHAMPION, CHALLENGER)
        client = MlflowClient()
        decision = client.get_model_version(MODEL_NAME, "2").tags["gate.decision"]
        assert "against champion version 1" in decision, decision  # judged, with no lock file to take
        assert client.get_experiment_by_name(MODEL_NAME).artifact_location.startswith("mlflow-artifacts:")
        assert "evaluation/model_card.md" in {a.path for a in client.list_artifacts(first["run_id"], "evaluation")}
        assert list(server_root.glob("artifacts/**/model_card.md"))  # kept by the server
        # no store's lock file either (the gate's, the set-up's); a training's own slot is under data/models
        assert not (work / "mlruns").exists() and not [p for p in work.glob("**/*.lock")
                                                        if not {"models", "checkpoints"} & set(p.parts)]
        champion = load_model(f"models:/{MODEL_NAME}@{CHAMPION}")
        assert champion.predict(pd.DataFrame({"name": ["Nakamura"]}))["language"][0] in SMALL_LANGUAGES
        # the champion's files deleted on the server: the next training is not failed by the gate, nor crowned
        crowned = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
        model_id = crowned.source.removeprefix("models:/")
        [files] = [p for p in server_root.glob(f"artifacts/**/{model_id}") if p.is_dir()]
        shutil.rmtree(files)
        third = workflow.run_pipeline(config)
        assert third["alias"] == CHALLENGER
        decision = client.get_model_version(MODEL_NAME, third["version"]).tags["gate.decision"]
        assert f"not compared: champion version {crowned.version} cannot be loaded" in decision, decision
        # every model and list of learnt names read back from the server was downloaded to a temporary folder: all
        # gone (MLflow leaves its own downloads for good: 20 MB per prediction command, with a team's server)
        assert not _left_in(own_tempdir)
        # and a model server's: its copy of the model goes when it stops
        served = tmp_path / "served-scratch"
        served.mkdir()
        with namelang_serve({"uri": f"http://127.0.0.1:{port}"}, model=f"models:/{MODEL_NAME}/{third['version']}",
                            tmpdir=served) as (proc, serve_port):
            answer = httpx.post(f"http://127.0.0.1:{serve_port}/invocations", timeout=30,
                                json={"dataframe_split": {"columns": ["name"], "data": [["Nakamura"]]}})
            assert answer.status_code == 200 and answer.json()["predictions"][0]["language"] in SMALL_LANGUAGES
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        assert not _left_in(served)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        # configure() pointed MLflow's process-wide URIs at this server: back to the environment's, which
        # monkeypatch puts back, for the tests after this one in the process
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_a_tracking_server_that_answers_5xx_is_named_by_its_status_and_no_password_is_shown():
    """A server that answers 503 to every health check: the error says so (not "None"), names the server
    without its password, and does not wait after the last try (0.5 s + 1 s of backoff, not 3.5 s)."""
    import http.server
    import threading

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler's API
            self.send_error(503)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://alice:s3cret@127.0.0.1:{server.server_port}"
        started = time.monotonic()
        with pytest.raises(TrackingError) as info:
            configure(uri)
        waited = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert "unreachable after 3 tries (HTTP 503)" in str(info.value)
    assert "s3cret" not in str(info.value) and f"http://***@127.0.0.1:{server.server_port}" in str(info.value)
    assert waited < 3.0


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def test_a_tracking_server_with_its_own_certificate_authority_is_reached_as_mlflow_reaches_it(tmp_path,
                                                                                               monkeypatch):
    """A team server whose certificate a private CA signed: MLflow reaches it given
    MLFLOW_TRACKING_SERVER_CERT_PATH (or MLFLOW_TRACKING_INSECURE_TLS), but our reachability check
    ignored them and called it unreachable, so no training could start."""
    import ssl

    cert, key = self_signed_certificate(tmp_path)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"https://127.0.0.1:{server.server_port}"
    try:
        with pytest.raises(TrackingError, match="unreachable after 1 tries.*(SSL|certificate)"):
            check_reachable(uri, attempts=1)  # not trusted: said so
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(cert))
        check_reachable(uri, attempts=1)
        monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
        monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
        check_reachable(uri, attempts=1)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("uri", "shown", "link"), [
    ("https://alice:s3cret@mlflow.example.org/", "https://***@mlflow.example.org/", "https://mlflow.example.org/"),
    ("https://t0ken@mlflow.example.org", "https://***@mlflow.example.org", "https://mlflow.example.org"),
    ("https://alice:s3cret@pw@mlflow.example.org/", "https://***@mlflow.example.org/", "https://mlflow.example.org/"),
    ("http://127.0.0.1:5000/?owner=bob@example.org", "http://127.0.0.1:5000/?owner=bob@example.org",
     "http://127.0.0.1:5000/?owner=bob@example.org"),
    ("postgresql://ml:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow", "postgresql://db:5432/mlflow"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db", "sqlite:///mlruns/mlflow.db")])
def test_tracking_uris_lose_their_passwords_where_people_read_them(uri, shown, link):
    from flows.cli import _browse_command
    from pipeline.errors import hide_credentials
    from pipeline.tracking import without_credentials

    assert hide_credentials(uri) == shown and without_credentials(uri) == link
    browse = _browse_command(hide_credentials(uri))  # the training summary holds the redacted URI
    assert "s3cret" not in browse and "pw@" not in browse and "t0ken" not in browse
    if uri.startswith("http"):
        assert browse == f"open {link}"
    elif "pw@" in uri:  # a database password: the command names the variable that holds it
        assert '--backend-store-uri "$MLFLOW_TRACKING_URI"' in browse
    else:  # a checkout's path with a space in it is one word to the shell
        assert "--backend-store-uri 'sqlite:////srv/my names/mlflow.db' --workers 1" in _browse_command(
            "sqlite:////srv/my names/mlflow.db")
    # and an error quoting a library's message with the URL in it (MLflow quotes a failed request's)
    error = TrackingError(f"the model store failed (API request to {uri.rstrip('/')}/api/2.0 failed)", uri)
    assert "s3cret" not in str(error) and "pw@" not in str(error) and "t0ken" not in str(error)
    assert str(error).startswith(shown)


def test_unreachable_tracking_server_fails_clearly_and_keeps_model(store, monkeypatch):
    port = free_port()  # nothing listens here
    with pytest.raises(TrackingError, match="unreachable after 3 tries") as info:  # the kind the flows retry
        configure(f"http://127.0.0.1:{port}")
    # the transport's reason, not some 400 characters of MLflow's and urllib3's wrappings around it
    assert str(info.value) == f"http://127.0.0.1:{port}: MLflow tracking server unreachable after 3 tries " \
                              "(Connection refused)"
    # the store goes away after training: the model stays on disk, and the error says where
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    run, data, ev, bundle = _trained_run(store["config"])
    mlflow.set_tracking_uri(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(TrackingError) as info:  # the kind the flow retries
            workflow.register_model(bundle, ev, data, run)
    finally:
        mlflow.set_tracking_uri(store["uri"])
        mlflow.set_registry_uri(store["uri"])
    assert str(bundle) in str(info.value) and "kept on disk" in str(info.value)
    assert bundle.exists() and bundle.stat().st_size > 0


def test_a_store_that_fails_after_training_loses_no_model(store, tmp_path, monkeypatch):
    """Evaluation is the first step after training to need the store, and the weights were saved only
    after it: a store failure there left no model on disk, and MLflow's traceback, not a line saying so."""
    from pipeline.errors import NamelangWarning
    from pipeline.pyfunc import load_bundle
    from pipeline.tracking import experiment_id

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    config = tiny_config(tmp_path, small_names_folder(tmp_path), epochs=2)
    trained = workflow.train

    def train_then_store_away(data, config, run=None, **options):
        result = trained(data, config, run, **options)
        run.client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")  # nothing listens there
        return result

    monkeypatch.setattr(workflow, "train", train_then_store_away)
    with (pytest.raises(TrackingError, match=r"could not send the evaluation to MLflow \(.*\); the trained model and "
                                             "its reports are kept on disk") as info,
          pytest.warns(NamelangWarning, match="could not mark MLflow run")):  # the store is away for that too
        workflow.run_pipeline(config)
    [bundle] = Path(config.data.models_dir).glob("*/model.pt")
    assert info.value.file == str(bundle.parent)
    assert load_bundle(bundle).label_names == store["labels"]  # whole: it loads
    client = MlflowClient()
    for run in client.search_runs([experiment_id(client)], "attributes.status = 'RUNNING'"):
        client.set_terminated(run.info.run_id, "FAILED")  # as the next training would find it


def test_a_deleted_experiment_is_one_clear_error_not_retried(tmp_path):
    """Deleted in the MLflow UI, the experiment refused every run: the flow retried three times, then
    printed three tracebacks of MLflow's "must be in the 'active' state"."""
    from pipeline.errors import NamelangError, TransientError
    from pipeline.tracking import experiment_id

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    made = experiment_id(client)
    client.delete_experiment(made)
    with pytest.raises(NamelangError) as info:
        experiment_id(client)
    assert not isinstance(info.value, TransientError) and info.value.__cause__ is None  # not retried: one line
    assert f"mlflow experiments restore --experiment-id {made}" in str(info.value)
    client.restore_experiment(made)
    assert experiment_id(client) == made


def test_runs_go_to_the_experiment_mlflow_experiment_name_names(tmp_path, monkeypatch):
    """MLflow's own variable was ignored: every run went to `namelang` whatever a team had set."""
    from pipeline.tracking import experiment_id

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "surnames-team")
    assert client.get_experiment(experiment_id(client)).name == "surnames-team"
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    assert client.get_experiment(experiment_id(client)).name == MODEL_NAME


def test_a_failing_store_is_not_read_as_no_champion(store, monkeypatch):
    """Read as "no champion", a store failure would let the gate crown a version unscored."""
    assert get_alias_version(MlflowClient(), "nosuchalias") is None  # the registry says: not there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    nobody = f"http://127.0.0.1:{free_port()}"
    client = MlflowClient(tracking_uri=nobody, registry_uri=nobody)
    with pytest.raises(TrackingError, match="failed while looking up alias @champion"):  # retried by the flows
        get_alias_version(client, CHAMPION)


def test_a_failed_run_says_what_stopped_it(store):
    """A cancelled flow run, a Ctrl-C and a crash all left the MLflow run FAILED and nothing more."""
    run = workflow.start_run(store["config"], workflow.NamesTable(*_names_table(store["config"])))
    with pytest.raises(KeyboardInterrupt), run.failed_on_error():
        raise KeyboardInterrupt
    ended = MlflowClient().get_run(run.run_id)
    assert ended.info.status == "FAILED" and ended.data.tags["namelang.failed_because"] == "KeyboardInterrupt"


def test_logging_the_model_leaves_the_run_open_for_its_final_status(store):
    """MLflow's fluent API ends a run it resumes; registration comes after, and may still fail."""
    config = store["config"]
    bundles = sorted(Path(config.data.models_dir).glob("*/model.pt"))
    assert bundles, "the fixture's run saved its model under data/models/"
    run = workflow.start_run(config, workflow.NamesTable(*_names_table(config)))
    run.log_model(bundles[0])
    assert MlflowClient().get_run(run.run_id).info.status == "RUNNING"
    run.finish("FAILED")
    assert MlflowClient().get_run(run.run_id).info.status == "FAILED"


def _trained_run(config):
    """A new run on the fixture's table, trained and evaluated, its model saved but not yet logged."""
    run, data, ev, bundle, _, _ = _trained_run_and_its_inputs(config)
    return run, data, ev, bundle


def _trained_run_and_its_inputs(config):
    """`_trained_run`, with the training result and the names table its evaluation took."""
    from pipeline import features
    from pipeline.normalize import read_names_table

    names, provenance = read_names_table(config.data.processed_dir / "names.parquet")
    data = features.build_tensors(names, provenance["content_sha256"], config.split)
    table = workflow.NamesTable(names, names.slice(0, 0), provenance, {})
    run = workflow.start_run(config, table)
    result = workflow.train(data, config, run)
    ev, _ = workflow.evaluate_model(result, data, table, config, run)
    return run, data, ev, workflow.save_model(result, data, config), result, table


def test_a_store_away_during_training_costs_no_epoch_and_gets_every_figure_after(store, monkeypatch):
    """A tracking server restarting during training made the per-epoch logging fail the training
    task (the longest step, not retried). Real refusals: the run's client is pointed at a port
    nothing listens on for epoch 2, and for the figures after training; all arrive later."""
    from pipeline import features
    from pipeline.errors import NamelangWarning
    from pipeline.normalize import read_names_table

    config = store["config"].model_copy(update={"train": store["config"].train.model_copy(update={"epochs": 3})})
    names, provenance = read_names_table(config.data.processed_dir / "names.parquet")
    data = features.build_tensors(names, provenance["content_sha256"], config.split)
    table = workflow.NamesTable(names, names.slice(0, 0), provenance, {})
    run = workflow.start_run(config, table)
    live = run.client
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    away = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")

    def store_away_for(epochs: set[int]):
        def after_epoch(record: dict) -> None:
            run.client = away if record["epoch"] + 1 in epochs else live
        return after_epoch

    with pytest.warns(NamelangWarning, match="the tracking store did not take") as said:
        result = workflow.train(data, config, run, on_epoch=store_away_for({2, 4}))  # 4: after the last epoch
    assert [str(w.message).split(" (")[0] for w in said if "tracking store" in str(w.message)] == [
        "the tracking store did not take epoch 2's figures",  # once per time it went away, saying what
        "the tracking store did not take the training's summary"]
    assert len(result.history) == 3
    # epoch 2's figures went with epoch 3's, at their own step
    assert [m.step for m in live.get_metric_history(run.run_id, "train_loss")] == [1, 2, 3]
    assert {m.key for m in run.kept_metrics} == {"best_epoch", "best_val_macro_f1", "train_seconds"}  # the summary's
    assert "best_epoch" not in live.get_run(run.run_id).data.metrics
    run.client = live  # the store is back
    workflow.evaluate_model(result, data, table, config, run)
    logged = live.get_run(run.run_id).data
    assert {"best_epoch", "train_seconds", "test_macro_f1"} <= logged.metrics.keys()
    assert logged.tags["namelang.stopped_by"] == "epochs" and not run.kept_metrics and not run.kept_tags
    run.finish()
    # a refusal no retry mends (the run deleted in the UI) still stops the training
    live.delete_run(run.run_id)
    with pytest.raises(MlflowException):
        run({"epoch": 4, "train_loss": 0.5})


class _Hanging(BaseHTTPRequestHandler):
    """A tracking server that takes requests and never answers them (a hung process, a dropped route)."""

    paths: list[str] = []

    def _hang(self) -> None:
        type(self).paths.append(self.path.split("?")[0])
        time.sleep(10)

    do_GET = do_POST = _hang  # noqa: N815 - http.server's naming

    def log_message(self, *args):
        pass


def _train_while_the_store_is_away(store, epochs: int, handler: type[BaseHTTPRequestHandler], userinfo: str = ""):
    """Train `epochs` epochs logging to `store`'s run, but to a local server of `handler` for epochs 2
    and 3 (the client swapped after each epoch): (the run, its live client, the warnings said)."""
    from pipeline import features
    from pipeline.errors import NamelangWarning
    from pipeline.normalize import read_names_table

    config = store["config"].model_copy(update={"train": store["config"].train.model_copy(update={"epochs": epochs})})
    names, provenance = read_names_table(config.data.processed_dir / "names.parquet")
    data = features.build_tensors(names, provenance["content_sha256"], config.split)
    run = workflow.start_run(config, workflow.NamesTable(names, names.slice(0, 0), provenance, {}))
    live = run.client
    handler.paths = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        away = MlflowClient(tracking_uri=f"http://{userinfo}127.0.0.1:{server.server_address[1]}")

        def away_for_epochs_2_and_3(record: dict) -> None:
            run.client = away if record["epoch"] < 3 else live

        with pytest.warns(NamelangWarning, match="did not take epoch 2's figures") as said:
            workflow.train(data, config, run, on_epoch=away_for_epochs_2_and_3)
    finally:
        server.shutdown()
        server.server_close()
    return run, live, said


def test_a_hanging_store_costs_a_later_epoch_one_quick_look(store, monkeypatch):
    """During an outage every epoch waited out MLflow's tries and timeouts again (4 tries of up to 30 s
    for a server that hangs): now the first refusal does, and each later epoch looks once at the
    server's health check (a couple of seconds) while it keeps the figures."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    # a team server's credentials, which MLflow quotes in its error ("API request to http://alice:...")
    run, live, said = _train_while_the_store_is_away(store, 3, _Hanging, userinfo="alice:s3cret@")
    assert _Hanging.paths == ["/api/2.0/mlflow/runs/log-batch", "/health"]  # epoch 2's try; epoch 3's look
    outage = next(str(w.message) for w in said if "did not take" in str(w.message))
    assert "***@127.0.0.1" in outage and "s3cret" not in outage
    assert [m.step for m in live.get_metric_history(run.run_id, "train_loss")] == [1, 2, 3]  # sent once back
    run.finish()


class _HealthyButFailing(BaseHTTPRequestHandler):
    """A tracking server whose health check answers while its API fails (its database down)."""

    paths: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).paths.append(self.path.split("?")[0])
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def do_POST(self):  # noqa: N802
        type(self).paths.append(self.path.split("?")[0])
        self.send_error(503)

    def log_message(self, *args):
        pass


def test_a_store_whose_api_fails_costs_a_later_epoch_one_try(store, monkeypatch):
    """Its health check answering, each later epoch of the outage waited out MLflow's tries again (with
    the default settings 3 retries, backing off 1, 2 and 4 s); the first refusal still does."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    run, live, _ = _train_while_the_store_is_away(store, 4, _HealthyButFailing)
    batch = "/api/2.0/mlflow/runs/log-batch"
    assert _HealthyButFailing.paths == [batch] * 3 + ["/health", batch]  # epoch 2: MLflow's tries; epoch 3: one
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"  # the setting is as it was
    assert [m.step for m in live.get_metric_history(run.run_id, "train_loss")] == [1, 2, 3, 4]
    run.finish()


def test_a_retried_registration_reuses_the_version(store):
    """The flow retries `register` when the store fails; a retry must not make a second version."""
    run, data, ev, bundle = _trained_run(store["config"])
    first = workflow.register_model(bundle, ev, data, run)
    again = workflow.register_model(bundle, ev, data, run)
    assert again.version == first.version
    # the gate is not run again against the alias it already moved: the first decision stands
    assert again.decision == first.decision and first.decision.previous_champion is not None
    assert len(MlflowClient().search_model_versions(f"name='{MODEL_NAME}' and run_id='{run.run_id}'")) == 1
    run.finish()


def test_a_retried_evaluation_logs_each_test_figure_once(store):
    """The flow retries `evaluate` when the store fails after its figures went in (on an artifact):
    each test figure got a second point in its history, a later one of the same value."""
    run, data, ev, _, result, table = _trained_run_and_its_inputs(store["config"])  # evaluated: the first try
    workflow.evaluate_model(result, data, table, store["config"], run)  # the retry
    client = MlflowClient()
    assert [m.value for m in client.get_metric_history(run.run_id, "test_macro_f1")] == [ev.metrics["macro_f1"]]
    run.log_metrics({"macro_f1": 0.5}, prefix="test_")  # a figure that changed is logged
    assert len(client.get_metric_history(run.run_id, "test_macro_f1")) == 2
    run.finish()


def test_registering_to_a_deleted_run_says_so_and_is_not_retried(store, monkeypatch):
    """A run deleted in the UI between training and registration: MLflow says "Cannot start run", which
    was a TrackingError, retried three times (about 40 s) before the same failure."""
    from pipeline.tracking import TrackedRun

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "deleted-in-the-ui")  # its own, to delete: the store is shared
    run, data, ev, bundle = _trained_run(store["config"])
    MlflowClient().delete_run(run.run_id)
    with pytest.raises(NamelangError, match=f"run {run.run_id} was deleted.*mlflow runs restore") as info:
        workflow.register_model(bundle, ev, data, run)
    assert not isinstance(info.value, TrackingError) and bundle.exists()
    # nor does the clean-up of abandoned runs trip over it: a deleted run takes no tag, so it is left
    assert TrackedRun(MlflowClient(), run.run_id).close_abandoned("its process died") is False
    assert MlflowClient().get_run(run.run_id).info.status == "RUNNING"
    # its experiment deleted, which took the run along: restoring the run alone would not do
    MlflowClient().restore_run(run.run_id)
    experiment = MlflowClient().get_run(run.run_id).info.experiment_id
    MlflowClient().delete_experiment(experiment)
    with pytest.raises(NamelangError, match=f"mlflow experiments restore --experiment-id {experiment}"):
        workflow.register_model(bundle, ev, data, run)


class _Refusing(BaseHTTPRequestHandler):
    """A tracking server that refuses every request with one answer."""

    status, body = 400, b""

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "code", "kept"), [
    (400, "BAD_REQUEST", True),  # the SQLite store's word for a connection pool exhausted or dropped
    (400, "INVALID_PARAMETER_VALUE", False),  # a deleted run ("must be in the 'active' state")
    (401, None, False),  # credentials refused (MLflow: UNAUTHENTICATED)
])
def test_training_keeps_its_figures_only_through_refusals_a_retry_may_mend(status, code, kept):
    from pipeline.errors import NamelangWarning
    from pipeline.tracking import TrackedRun

    _Refusing.status = status
    _Refusing.body = json.dumps({"error_code": code, "message": "no"}).encode() if code else b"Unauthorized"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = TrackedRun(MlflowClient(f"http://127.0.0.1:{server.server_address[1]}"), "0" * 32)
        if kept:
            with pytest.warns(NamelangWarning, match="did not take epoch 1's figures"):
                run({"epoch": 1, "train_loss": 0.5})
            assert [(m.key, m.step) for m in run.kept_metrics] == [("train_loss", 1)]
        else:
            with pytest.raises(MlflowException):
                run({"epoch": 1, "train_loss": 0.5})
    finally:
        server.shutdown()
        server.server_close()


def test_a_bug_in_registration_is_raised_as_it_is_not_as_a_store_failure(store):
    """A TrackingError is retried by the flow: a bug wrapped as one would run three more times before
    it showed, under a message blaming MLflow."""
    run, data, ev, bundle = _trained_run(store["config"])
    misaligned = dataclasses.replace(ev, names=ev.names[:-1])  # a caller's bug: the gate's lists differ
    with pytest.raises(ValueError, match="test names") as info:
        workflow.register_model(bundle, misaligned, data, run)
    assert not isinstance(info.value, TrackingError)
    run.finish("FAILED")


def test_failing_run_keeps_the_first_error_when_the_store_is_gone(store, monkeypatch):
    from pipeline.tracking import TrackedRun

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    run = workflow.start_run(store["config"], workflow.NamesTable(*_names_table(store["config"])))
    dead = TrackedRun(MlflowClient(f"http://127.0.0.1:{free_port()}"), run.run_id)
    with pytest.warns(UserWarning, match=f"could not mark MLflow run {run.run_id} as FAILED"):
        dead.fail()  # warns, does not raise: the caller re-raises the error that made the run fail
    run.fail()
    assert MlflowClient().get_run(run.run_id).info.status == "FAILED"


def _names_table(config):
    from pipeline.normalize import read_names_table

    names, provenance = read_names_table(config.data.processed_dir / "names.parquet")
    return names, names.slice(0, 0), provenance, {}


def _server_group(proc: subprocess.Popen) -> int | None:
    """The process group `namelang serve` started its server in (its child's pid), if it has one yet."""
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


@contextlib.contextmanager
def namelang_serve(store, log: Path | None = None, model: str | None = None,
                   tmpdir: Path | None = None) -> Iterator[tuple[subprocess.Popen, int]]:
    """The real `namelang serve` on a free port, answering, its output in `log` if given (`model`: its
    --model; `tmpdir`: its TMPDIR); whatever the test does to it, nothing of it (namelang, mlflow, uvicorn)
    outlives the test."""
    port = free_port()
    # no bin folder on PATH: `namelang serve` must put the virtualenv's there for mlflow to find uvicorn
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below, after the server
    # a registry URI left in the shell (another project's): the server checks and serves the model from one store
    elsewhere = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--port", str(port),
                             *(["--model", model] if model else [])],
                            env={**os.environ, "MLFLOW_TRACKING_URI": store["uri"], "MLFLOW_REGISTRY_URI": elsewhere,
                                 **({"TMPDIR": str(tmpdir)} if tmpdir else {})},
                            stdout=out, stderr=out)
    group = None
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", proc=proc)
        group = _server_group(proc)
        assert group is not None
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if group is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        if log:
            out.close()


def test_namelang_serve_answers_invocations_and_stops_on_sigterm(store):
    """`namelang serve` (mlflow models serve, which runs uvicorn) answers; a SIGTERM to namelang alone,
    as systemd or docker send, stops the whole server."""
    with namelang_serve(store) as (proc, port):
        url = f"http://127.0.0.1:{port}/invocations"
        ok = httpx.post(url, json={"dataframe_split": {"columns": ["name"], "data": [["Hinton"], ["Nakamura"]]}},
                        timeout=30)
        assert ok.status_code == 200, ok.text
        predictions = ok.json()["predictions"]
        assert len(predictions) == 2 and predictions[1]["language"] == store["top"]["Nakamura"]
        assert {"language", "probability", "language_2", "probability_2", "language_3"} <= set(predictions[0])
        bad_row = httpx.post(url, json={"dataframe_split": {"columns": ["name"], "data": [[""]]}}, timeout=30)
        assert bad_row.status_code == 200 and bad_row.json()["predictions"][0]["error"] == "empty name"
        assert "NaN" not in bad_row.text  # strict JSON: missing values are null
        not_text = httpx.post(url, json={"dataframe_split": {"columns": ["name"], "data": [[12]]}}, timeout=30)
        assert (400 <= not_text.status_code < 500
                or not_text.json()["predictions"][0]["error"] == "name must be a string, got int")
        # MLflow's other formats: a list of names is that many rows (as the signature "any", one row of a
        # list); a null is reported in the dataframe formats (the others make "None" of it: README)
        two, records = ["Nakamura", "Tanaka"], [{"name": "Nakamura"}, {"name": "Tanaka"}]
        for payload in ({"inputs": two}, {"inputs": {"name": two}}, {"instances": two}, {"instances": records},
                        {"dataframe_records": records}):
            answer = httpx.post(url, json=payload, timeout=30)
            assert answer.status_code == 200, (payload, answer.text)
            assert [row["language"] for row in answer.json()["predictions"]] == [
                store["top"]["Nakamura"], store["top"]["Tanaka"]], (payload, answer.text)
        missing = httpx.post(url, json={"dataframe_records": [{"name": None}, {"name": "Nakamura"}],
                                        "params": {"top_k": None}}, timeout=30)  # null top_k: the default, 3
        assert missing.status_code == 200, missing.text
        rows = missing.json()["predictions"]
        assert rows[0]["error"] == "missing name (null)" and rows[1]["language_3"] is not None, rows
        for payload in ({"dataframe_split": {"columns": ["surname"], "data": [["Hinton"]]}}, {"nonsense": 1}):
            answer = httpx.post(url, json=payload, timeout=30)
            assert 400 <= answer.status_code < 500, (payload, answer.status_code, answer.text)
        if sys.platform == "linux":  # the model was loaded by a child that has ended, not by this long-lived parent
            assert "libtorch" not in Path(f"/proc/{proc.pid}/maps").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert stops_answering(f"http://127.0.0.1:{port}/ping"), \
            "the server still answers after `namelang serve` got SIGTERM"


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGHUP, signal.SIGKILL],
                         ids=["ctrl-c", "terminal-closed", "killed"])
def test_namelang_serve_stops_with_whatever_stops_it(store, stop, tmp_path):
    """Ctrl-C exits 0; a closed terminal (SIGHUP) exits 0; even a SIGKILL, which namelang cannot
    forward, takes the server down with it: nothing keeps serving. A stop it asked for is no
    failure: mlflow's own CLI, handed the Ctrl-C, ended the log with "Aborted!"."""
    log, scratch = tmp_path / "serve.log", tmp_path / "tmp"
    scratch.mkdir()
    with namelang_serve(store, log, tmpdir=scratch) as (proc, port):
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == (-signal.SIGKILL if stop == signal.SIGKILL else 0)
        assert stops_answering(f"http://127.0.0.1:{port}/ping"), \
            f"the server still answers after namelang got {stop.name}"
    assert "Shutting down" in log.read_text() or stop == signal.SIGKILL  # uvicorn's graceful stop
    # which version answers: the alias resolved once, when it was checked (it said only the alias)
    champion = MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION).version
    assert f"serving models:/namelang@champion (version {champion}, until restarted) on http" in log.read_text()
    assert "Aborted" not in log.read_text()
    # its scratch folder goes with a stop it hears (after a SIGKILL nothing of namelang's runs to remove it)
    assert stop == signal.SIGKILL or not _left_in(scratch), _left_in(scratch)


def test_a_second_ctrl_c_reaches_the_server_as_ctrl_c(tmp_path):
    """The first stop signal goes on as SIGTERM (a graceful stop, and no "Aborted!" from mlflow's
    CLI), a second as SIGINT: uvicorn's sign to stop waiting for requests in flight. The server here
    is a process that writes down what it gets and stops at the SIGINT."""
    record = tmp_path / "signals.txt"
    server = ("import signal, sys, time\n"
              "def note(signum, _):\n"
              "    open(sys.argv[1], 'a').write(signal.Signals(signum).name + '\\n')\n"
              "    if signum == signal.SIGINT: sys.exit(0)\n"
              "signal.signal(signal.SIGTERM, note); signal.signal(signal.SIGINT, note)\n"
              "import os; open(sys.argv[1], 'w').write(f'ready {os.getpid()}\\n')\n"
              "while True: time.sleep(0.05)\n")
    wrapper = ("import sys; from flows.processes import run_forwarding_signals\n"
               f"sys.exit(run_forwarding_signals([sys.executable, '-c', {server!r}, {str(record)!r}], {{}}))\n")
    proc = subprocess.Popen([sys.executable, "-c", wrapper])
    try:
        deadline = time.monotonic() + 60
        while not (record.exists() and record.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        while record.read_text().count("\n") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        words = record.read_text().split()  # ready <pid>, then the signals in the order they came
        assert words[0] == "ready" and words[2:] == ["SIGTERM", "SIGINT"]
    finally:
        proc.kill()
        proc.wait()
        with contextlib.suppress(FileNotFoundError, IndexError, ValueError, ProcessLookupError):
            os.kill(int(record.read_text().split()[1]), signal.SIGKILL)  # it outlives a failed test otherwise


def _children_running(pid: int, word: str) -> list[int]:
    """Processes whose parent is `pid` and whose command line holds `word` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid \
                    and word in (entry / "cmdline").read_text():
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def serve_checking_its_model(store) -> Iterator[tuple[subprocess.Popen, int]]:
    """`namelang serve` (stderr piped) and the pid of its child checking the model, once it runs."""
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--port", str(free_port())],
                            env={**os.environ, "MLFLOW_TRACKING_URI": store["uri"]}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (checking := _children_running(proc.pid, "serving-environment")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert checking, "no checking child appeared"
        yield proc, checking[0]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_stopping_serve_while_it_checks_the_model_leaves_nothing(store, tmp_path):
    """A SIGTERM (or Ctrl-C) while the model is still being loaded in the checking child: one line, exit 143,
    and that child (PyTorch and the weights) does not outlive `namelang serve`."""
    with serve_checking_its_model(store) as (proc, checking):
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143 and "interrupted before the server started" in err and "Traceback" not in err
        deadline = time.monotonic() + 10
        while Path(f"/proc/{checking}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{checking}").exists(), "the checking child outlived namelang serve"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_model_check_killed_by_the_system_is_said_not_silent(store):
    """The checking child killed by a signal (the out-of-memory killer, loading the model) made `namelang
    serve` exit 247 (typer's -9) without a word."""
    with serve_checking_its_model(store) as (proc, checking):
        os.kill(checking, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGKILL, err
        assert err == "error: models:/namelang@champion: the model check was killed by SIGKILL before the server " \
                      "started\n", err


def test_predict_with_standard_input_closed_says_no_names_were_given():
    """`namelang predict <&-` said "'NoneType' object has no attribute 'isatty'"."""
    done = subprocess.run([sys.executable, "-m", "flows.cli", "predict"], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: os.close(0))
    assert done.returncode == 2 and done.stderr.startswith("error: no names given: pass them as arguments"), done.stderr


def test_serve_names_an_ipv6_address_as_a_url_does():
    from flows.cli import invocations_url

    assert invocations_url("::1", 5001) == "http://[::1]:5001/invocations"  # was http://::1:5001/...
    assert invocations_url("127.0.0.1", 5001) == "http://127.0.0.1:5001/invocations"
    assert invocations_url("localhost", 80) == "http://localhost:80/invocations"


def test_serve_on_a_port_in_use_is_one_line(tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = CliRunner().invoke(app, ["serve", "--port", str(taken.getsockname()[1])])
    assert result.exit_code == 2 and "cannot listen on 127.0.0.1:" in result.output
    assert "Traceback" not in result.output
    for host in ("0.0.0.0.0", "192.0.2.1"):  # a typo; an address of no interface here (a documentation one)
        result = CliRunner().invoke(app, ["serve", "--host", host, "--port", str(free_port())])
        assert result.exit_code == 2 and result.output.strip().endswith("; check --host"), result.output


def test_predict_through_serve_wrapper_fails_cleanly_without_model(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    result = CliRunner().invoke(app, ["serve", "--port", str(free_port())])
    assert result.exit_code == 2, result.output
    assert result.output == (f"error: {tmp_path / 'empty.db'}: no MLflow store here, so no model to use; train one "
                             "with `make run` or `namelang train --source DATA` (or set MLFLOW_TRACKING_URI)\n")




def test_a_retried_gate_judges_again_when_a_newer_champion_came(store):
    """A decision recorded against an older champion is not replayed over a newer one: the version is
    judged again, against the champion there is now. (Last in this module: it may move the alias.)"""
    from pipeline.registry import learnt_names, promote_if_better

    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    copy = mlflow.register_model(champion.source, MODEL_NAME)  # the same model, as a later run's version
    for key, value in {"gate.decision": "promoted to champion", "gate.new_macro_f1": "0.5",
                       "gate.champion_macro_f1": "", "gate.previous_champion": "",  # as if first, back then
                       "gate.alias": CHAMPION}.items():
        client.set_model_version_tag(MODEL_NAME, copy.version, key, value)
    learnt = learnt_names(client, champion.run_id)
    japanese = (SHARED_NAMES / "Japanese.txt").read_text(encoding="utf-8").split()
    names = [n for n in japanese if n not in learnt][:20]  # names new to the champion, which it mostly knows
    decision = promote_if_better(str(copy.version), names, ["Japanese"] * len(names), ["Russian"] * len(names),
                                 languages=store["labels"])
    assert decision.previous_champion == str(champion.version) and decision.champion_macro_f1 > 0
    assert decision.alias == CHALLENGER and decision.compared_names == len(names)  # 0.0 loses: not replayed
    tags = client.get_model_version(MODEL_NAME, copy.version).tags
    assert tags["gate.alias"] == CHALLENGER and tags["gate.previous_champion"] == str(champion.version)
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(champion.version)


def test_a_retried_gate_leaves_a_promotion_made_by_hand_since_alone(store):
    """A registration retried after its gate decision (the task's retry, a resumed run) re-applied the
    recorded alias: a rollback with `namelang promote` made meanwhile was undone, and a challenger
    promoted by hand got `challenger` back beside `champion`."""
    from pipeline.registry import promote, promote_if_better

    client = MlflowClient()
    champion = str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version)
    names = _names_new_to(client, client.get_model_version(MODEL_NAME, champion), count=5)

    def judged(alias: str) -> str:
        """A later run's version of the same model, with the gate's decision recorded and applied."""
        version = str(mlflow.register_model(client.get_model_version(MODEL_NAME, champion).source,
                                            MODEL_NAME).version)
        for key, value in {"gate.decision": f"{alias}: as judged", "gate.new_macro_f1": "0.9",
                           "gate.champion_macro_f1": "0.5", "gate.previous_champion": champion,
                           "gate.alias": alias}.items():
            client.set_model_version_tag(MODEL_NAME, version, key, value)
        client.set_registered_model_alias(MODEL_NAME, alias, version)
        return version

    def retried(version: str):
        return promote_if_better(version, names, ["Japanese"] * 5, ["Russian"] * 5, languages=store["labels"])

    try:
        crowned = judged(CHAMPION)
        assert promote(champion) == crowned  # rolled back by hand
        assert retried(crowned).alias == CHAMPION  # the decision stands as recorded...
        assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == champion  # ...the rollback too
        second = judged(CHALLENGER)
        assert promote(second) == champion  # promoted by hand
        assert retried(second).alias == CHALLENGER
        assert client.get_model_version(MODEL_NAME, second).aliases == [CHAMPION]
        retried_first = judged(CHAMPION)  # and a retry with nothing done by hand still applies its decision
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, second)
        client.set_model_version_tag(MODEL_NAME, retried_first, "gate.previous_champion", second)
        assert retried(retried_first).alias == CHAMPION
        assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == retried_first
    finally:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, champion)


def _names_new_to(client: MlflowClient, champion, count: int = 20) -> list[str]:
    """Japanese names the champion did not learn from (it knows Japanese well: it scores above 0)."""
    from pipeline.registry import learnt_names

    learnt = learnt_names(client, champion.run_id)
    japanese = (SHARED_NAMES / "Japanese.txt").read_text(encoding="utf-8").split()
    return [n for n in japanese if n not in learnt][:count]


def test_the_gate_asks_the_champion_about_the_names_as_written(store, monkeypatch):
    """Evaluation gave the new version each test name's accents (its letter model reads them); the
    champion must be asked about the same spellings, not their ASCII folding, or it is judged blind
    to what the new version saw. Which names are left out is still decided on the ASCII names."""
    from pipeline import registry

    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    candidate = mlflow.register_model(champion.source, MODEL_NAME)
    names = _names_new_to(client, champion, count=5)
    spellings = [name.replace("a", "ā", 1) for name in names]  # as a file with macrons would spell them
    asked: list[list[str]] = []
    real_score = registry.score_model
    monkeypatch.setattr(registry, "score_model", lambda model, names_, languages: asked.append(names_)
                        or real_score(model, names_, languages))
    decision = registry.promote_if_better(str(candidate.version), names, ["Japanese"] * 5, ["Russian"] * 5,
                                         languages=store["labels"], spellings=spellings)
    assert asked == [spellings] and decision.compared_names == 5 and decision.alias == CHALLENGER


def test_a_gate_retried_after_a_half_written_judgement_judges_afresh(store):
    """`gate.alias` is written last: without it, the other `gate.*` tags of a judgement cut short are
    not taken for a decision. (At the end of this module: it may move the alias.)"""
    from pipeline.registry import promote_if_better

    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    copy = mlflow.register_model(champion.source, MODEL_NAME)
    # a judgement against today's champion, cut short before its last tag: replayed, it would crown the copy
    for key, value in {"gate.decision": "promoted to champion", "gate.new_macro_f1": "0.99",
                       "gate.champion_macro_f1": "0.5", "gate.previous_champion": str(champion.version)}.items():
        client.set_model_version_tag(MODEL_NAME, copy.version, key, value)
    names = _names_new_to(client, champion)
    decision = promote_if_better(str(copy.version), names, ["Japanese"] * len(names), ["Russian"] * len(names),
                                 languages=store["labels"])
    assert decision.alias == CHALLENGER and decision.previous_champion == str(champion.version)
    assert decision.new_macro_f1 == 0.0 and decision.champion_macro_f1 > 0
    tags = client.get_model_version(MODEL_NAME, copy.version).tags
    assert tags["gate.alias"] == CHALLENGER and tags["gate.new_macro_f1"] == "0.0"
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(champion.version)


def test_the_gate_judges_again_when_the_champion_moves_while_it_scores(store, monkeypatch):
    """A tracking server has no lock file: another run's gate may crown its version while this one is
    scoring the old champion. The verdict must be against the champion there is at the end."""
    from pipeline import registry

    client = MlflowClient()
    champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    rival = mlflow.register_model(champion.source, MODEL_NAME)  # crowned by another gate meanwhile
    candidate = mlflow.register_model(champion.source, MODEL_NAME)
    names = _names_new_to(client, champion)
    scored: list[str] = []
    real_load = registry.load_model

    def load_while_another_gate_crowns(uri: str, *args, **kwargs):  # the champion, loaded to be scored
        scored.append(uri)
        if len(scored) == 1:
            client.set_registered_model_alias(MODEL_NAME, CHAMPION, rival.version)
        return real_load(uri, *args, **kwargs)

    monkeypatch.setattr(registry, "load_model", load_while_another_gate_crowns)
    decision = registry.promote_if_better(str(candidate.version), names, ["Japanese"] * len(names),
                                         ["Russian"] * len(names), languages=store["labels"])
    assert scored == [f"models:/{MODEL_NAME}/{champion.version}", f"models:/{MODEL_NAME}/{rival.version}"]
    assert decision.previous_champion == str(rival.version) and decision.alias == CHALLENGER
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(rival.version)
    assert client.get_model_version(MODEL_NAME, candidate.version).tags["gate.previous_champion"] == str(rival.version)


def test_the_gate_gives_one_reason_for_every_shape_of_decision():
    """The tag, the training summary and the Prefect artifact print `reason()`: each shape its own
    words, none of them "on None test rows" or a champion "none" beside "not compared"."""
    from flows.training import promotion_markdown

    shapes = [
        (PromotionDecision("1", CHAMPION, 0.6, None, None), "no champion before it"),
        (PromotionDecision("3", CHAMPION, 0.61, 0.6, "2", 2442),
         "macro-F1 0.6100 against champion version 2's 0.6000, on 2442 test rows"),
        (PromotionDecision("3", CHALLENGER, 0.59, 0.6, "2", 400, 2042),
         "macro-F1 0.5900 against champion version 2's 0.6000, on 400 test rows; 2042 left out, names one of the "
         "two models learnt from"),
        (PromotionDecision("3", CHALLENGER, 0.9, None, "2", 0, 50),
         "not compared: all 50 test rows are names champion version 2 or this one learnt from"),
        (PromotionDecision("3", CHALLENGER, 0.9, None, "2", missing_languages=("Arabic", "Greek")),
         "not compared: it does not know 2 of champion version 2's languages (Arabic, Greek)"),
        # read back from tags written before gate.compared_names existed
        (PromotionDecision("3", CHAMPION, 0.61, 0.6, "2"), "macro-F1 0.6100 against champion version 2's 0.6000"),
    ]
    for decision, reason in shapes:
        assert decision.reason() == reason and decision.as_dict()["reason"] == reason
        markdown = promotion_markdown(decision)
        assert f"got the alias **{decision.alias}**: {reason}." in markdown
        champion_cell = markdown.rsplit("| champion before | ", 1)[1]
        assert champion_cell.startswith("none" if decision.previous_champion is None
                                        else f"version {decision.previous_champion}, not compared"
                                        if decision.champion_macro_f1 is None else f"{decision.champion_macro_f1:.4f}")
