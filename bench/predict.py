"""Prediction benchmark: the MLflow pyfunc model next to the raw PyTorch model it wraps.

Trains a model of the default architecture briefly on the shared data (speed does not depend
on how long it trained), logs it to a temporary SQLite store, loads it back with
`mlflow.pyfunc.load_model` and measures, side by side in one process:
- batch throughput over 100,000 names (names/s);
- single-name latency over repeated one-name calls (p50, p99 in ms).
Last line: {"pyfunc_names_per_s", "torch_names_per_s", "p50_ms", "p99_ms"}.

    python bench/predict.py [--source ../shared/data/names] [--names 100000] [--calls 2000]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pipeline  # noqa: E402, F401 - first: it sets PyTorch's thread spinning, as the product runs

# isort: split
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402

from pipeline import workflow  # noqa: E402
from pipeline.config import DataConfig, PipelineConfig, TrainConfig  # noqa: E402
from pipeline.features import encode_marks, encode_names, letters_beyond_ascii  # noqa: E402
from pipeline.model import predict_logits  # noqa: E402
from pipeline.normalize import folded_names  # noqa: E402
from pipeline.tracking import TrackedRun, configure  # noqa: E402


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(ROOT.parent / "shared/data/names"))
    parser.add_argument("--names", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="namelang-bench-predict-"))  # 110 MB: a checkpoint, a store, the model
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    config = PipelineConfig(data=DataConfig(source=args.source, raw_dir=work / "raw", processed_dir=work / "processed",
                                            models_dir=work / "models"),
                            train=TrainConfig(epochs=args.epochs, progress=False, checkpoint_dir=work / "ckpt"))
    table = workflow.normalize_names(workflow.ingest_source(config.data, Path(args.source)), config.data)
    data = workflow.build_tensors(table, config.split)
    result = workflow.train(data, config)
    bundle = workflow.save_model(result, data, config)
    configure()
    run = TrackedRun.start(config, {})
    info = run.log_model(bundle)
    run.finish()
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    model = result.model.cpu().eval()

    rng = np.random.default_rng(0)
    raw_names = table.names["name"].to_pylist()
    batch = [raw_names[i] for i in rng.integers(0, len(raw_names), args.names)]
    frame = pd.DataFrame({"name": batch})
    ascii_batch = folded_names(pa.array(batch)).to_pylist()
    tokens, lengths = encode_names(ascii_batch)
    marks = encode_marks(letters_beyond_ascii(batch))  # the letter model's input, as the pyfunc makes it

    def timed(fn, repeat: int = 3) -> float:
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best

    torch_batch_s = pyfunc_batch_s = float("inf")
    for _ in range(3):  # interleaved, so both see the same machine load
        torch_batch_s = min(torch_batch_s,
                            timed(lambda: torch.softmax(predict_logits(model, tokens, lengths, marks), 1), 1))
        pyfunc_batch_s = min(pyfunc_batch_s, timed(lambda: pyfunc.predict(frame), 1))

    singles = [[raw_names[i]] for i in rng.integers(0, len(raw_names), args.calls)]
    one_frames = [pd.DataFrame({"name": s}) for s in singles]
    one_tensors = [(*encode_names(folded_names(pa.array(s)).to_pylist()), encode_marks(letters_beyond_ascii(s)))
                   for s in singles]
    for f in one_frames[:50]:  # warm-up
        pyfunc.predict(f)
    pyfunc_lat, torch_lat = [], []
    for f, (tok, ln, mk) in zip(one_frames, one_tensors, strict=True):
        t0 = time.perf_counter()
        pyfunc.predict(f)
        t1 = time.perf_counter()
        torch.softmax(predict_logits(model, tok, ln, mk), 1)
        t2 = time.perf_counter()
        pyfunc_lat.append(t1 - t0)
        torch_lat.append(t2 - t1)

    figures = {
        "pyfunc_names_per_s": round(args.names / pyfunc_batch_s),
        "torch_names_per_s": round(args.names / torch_batch_s),
        "p50_ms": round(percentile_ms(pyfunc_lat, 50), 3),
        "p99_ms": round(percentile_ms(pyfunc_lat, 99), 3),
    }
    print(f"model: {config.model.cell}, hidden {config.model.hidden_size}, bidirectional "
          f"{config.model.bidirectional}; {torch.get_num_threads()} CPU threads; {args.names} names per batch")
    print(f"{'path':<22}{'batch names/s':>16}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'raw PyTorch':<22}{figures['torch_names_per_s']:>16,}{percentile_ms(torch_lat, 50):>10.3f}"
          f"{percentile_ms(torch_lat, 99):>10.3f}")
    print(f"{'MLflow pyfunc':<22}{figures['pyfunc_names_per_s']:>16,}{figures['p50_ms']:>10.3f}"
          f"{figures['p99_ms']:>10.3f}")
    ratio = figures["torch_names_per_s"] / figures["pyfunc_names_per_s"]
    print(f"pyfunc batch cost / raw PyTorch: {ratio:.2f}x (target <= 2x); single-name p50 "
          f"{figures['p50_ms']:.2f} ms (target < 5 ms)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
