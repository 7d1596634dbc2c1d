"""Benchmark: ingest + normalize + write throughput (names/s) and peak memory, per data size.

    .venv/bin/python bench/ingest.py [--sizes 100000 1000000] [--repeats 3]

Runs the real pipeline (`pipeline.ingest.ingest` -> `pipeline.normalize.normalize` ->
`write_names_table`) on the shared tutorial data (when ../shared/data/names is there) and on
synthetic folders it generates: 18 languages, surnames built from per-language syllables
(some with accented letters, a few shared between languages, many repeated). Each size runs in
a fresh child Python, so its peak RSS is its own. Targets: >= 1,000,000 names/s at 1M names on
2 cores, peak RSS < 1 GiB, time growing linearly with size.

The last line of output is one JSON object:
{"rate_100k": ..., "rate_1m": ..., "rss_mib_100k": ..., "rss_mib_1m": ...}
(rates: names/s over the best of --repeats runs; RSS: the child's peak, in MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_NAMES = ROOT.parent / "shared" / "data" / "names"

# Per language: plain syllables, then a few accented ones (drawn rarely), like the tutorial's files.
SYLLABLES = {
    "Arabic": ("al ab bou ha mad sa lim kha rim na sir da oud far", ""),
    "Chinese": ("zhang wang li chen liu yang huang zhao wu zhou xu sun ma hu", ""),
    "Czech": ("no vak dvo rak ho rak cer ny pro cha zka kre jci", "ř č š ě ž ý"),
    "Dutch": ("van der berg de jong vries bak ker visser meer smit huis", "ë ï"),
    "English": ("smith john son wil liams brown tay lor dav ies ev ans wright", ""),
    "French": ("le blanc du pont mar tin ber nard ro bert mo reau gi rard", "é è ç ê"),
    "German": ("mul ler schmidt schnei der fisch er mey er wag ner beck hoff", "ß ü ö ä"),
    "Greek": ("pa pa do pou los ni ko la ou ge or gi ou dis ka ra", ""),
    "Irish": ("o mc mur phy kel ly sul li van walsh byrne ryan con nor", "á ó"),
    "Italian": ("ros si rus so fer ra ri es po si to bi an chi ro ma no", "à ì ò"),
    "Japanese": ("sa to su zu ki ta ka ha shi wa na be ya ma mo to ito", ""),
    "Korean": ("kim lee park choi jung kang cho yoon jang lim han oh seo", ""),
    "Polish": ("no wak ko wal ski wis niew ski woj cik ka min ska lew", "ł ś ż ą ę ń"),
    "Portuguese": ("sil va san tos fer rei ra pe rei ra oli vei ra cos ta", "ã õ ç á"),
    "Russian": ("iva nov smir nov kuz net sov po pov vas ile vich ev", ""),
    "Scottish": ("mac don ald camp bell stew art ro bert son thom son", ""),
    "Spanish": ("gar cia mar tin ez lo pez san chez go mez fer nan dez", "ñ á é í ó ú"),
    "Vietnamese": ("nguyen tran le pham hoang phan vu dang bui do ho ngo", ""),
}


def synthetic_names(folder: Path, n: int, seed: int = 0) -> int:
    """Write about `n` names as 18 `<Language>.txt` files; returns the exact number of lines."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(len(SYLLABLES), 2.0))  # class imbalance, as in the real data
    per_language = np.maximum(1, np.round(weights * n).astype(np.int64))
    per_language[-1] += n - per_language.sum()  # exact total
    common = np.array(["Martin", "Costa", "Lee", "Kim", "Ryan", "Thomas", "Bernard", "Ross"], dtype=object)
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for (language, (plain, accented)), count in zip(SYLLABLES.items(), per_language, strict=True):
        count = int(count)
        # each syllable also with a vowel after it: ~90 syllables, millions of possible names per language
        base = plain.split()
        plain_syllables = base + [s + v for s in base for v in "aeiou" if s[-1] not in "aeiou"]
        syllables = np.array(plain_syllables + accented.split(), dtype=object)
        p = np.ones(len(syllables))
        p[len(plain_syllables):] = 0.15  # accented syllables are rare: a few percent of names carry one
        p /= p.sum()
        pool_size = max(1, int(count * 0.8))
        parts = rng.choice(syllables, size=(pool_size, 4), p=p)
        length = rng.choice([2, 3, 3, 4], size=pool_size)
        pool = np.array(sorted({"".join(row[:k]).capitalize() for row, k in zip(parts, length, strict=True)}),
                        dtype=object)
        pool = pool[rng.permutation(len(pool))]
        pool_size = len(pool)
        rows = pool[np.arange(count) % pool_size]  # every pool name once, the rest repeats
        repeat = rng.random(count) < 0.10
        rows[repeat] = pool[rng.integers(0, pool_size, size=int(repeat.sum()))]
        shared = rng.random(count) < 0.02  # names several languages carry
        rows[shared] = common[rng.integers(0, len(common), size=int(shared.sum()))]
        (folder / f"{language}.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
        total += count
    return total


def child(source: str, out: str, repeats: int) -> None:
    """Time the pipeline in this (fresh) process and print one JSON line."""
    from pipeline.config import DataConfig
    from pipeline.ingest import ingest
    from pipeline.normalize import normalize, write_names_table

    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    config = DataConfig(source=source)
    walls, cpus = [], []
    for _ in range(repeats):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        table = normalize(ingest(config), config.max_name_chars)
        write_names_table(table, out)
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    print(json.dumps({
        "lines": table.quality["lines"], "rows": table.quality["rows"],
        "distinct": table.quality["distinct_names"], "duplicates": table.quality["duplicate_lines"],
        "multi_language": table.quality["multi_language_names"]["count"],
        "first_s": walls[0], "best_s": min(walls), "median_s": statistics.median(walls), "cpu_s": min(cpus),
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_rss_mib": baseline_mib,
    }))


def measure(source: Path, out: Path, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--child", str(source), str(out), "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        sys.exit(f"benchmark child failed on {source}:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.repeats)
        return

    print(f"namelang ingest benchmark: ingest + normalize + write, best of {args.repeats} runs, "
          f"each size in a fresh process; {os.cpu_count()} CPUs")
    results: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="namelang-bench-") as tmp:
        tmp_path = Path(tmp)
        if SHARED_NAMES.is_dir():
            results.append(("shared data", measure(SHARED_NAMES, tmp_path / "out-shared", args.repeats)))
        for size in args.sizes:
            folder = tmp_path / f"synthetic-{size}"
            t0 = time.perf_counter()
            synthetic_names(folder, size)
            print(f"  generated {size:,} synthetic names in {time.perf_counter() - t0:.1f} s")
            results.append((f"synthetic {size:,}", measure(folder, tmp_path / f"out-{size}", args.repeats)))

    header = (f"{'data':<20} {'names':>10} {'distinct':>9} {'dup lines':>9} {'first s':>7} {'best s':>7} "
              f"{'median s':>8} {'names/s':>11} {'us/name':>7} {'cpu s':>6} {'peak RSS MiB':>12}")
    print(header)
    print("-" * len(header))
    for label, r in results:
        rate, us = r["lines"] / r["best_s"], 1e6 * r["best_s"] / r["lines"]
        print(f"{label:<20} {r['lines']:>10,} {r['distinct']:>9,} {r['duplicates']:>9,} {r['first_s']:>7.3f} "
              f"{r['best_s']:>7.3f} {r['median_s']:>8.3f} {rate:>11,.0f} {us:>7.2f} {r['cpu_s']:>6.2f} "
              f"{r['rss_mib']:>12.0f}")
    print("names/s: wall clock of the best run (the first run in a process also pays one-time set-up); "
          "cpu s: the child's own CPU time, which other load on the machine does not inflate")
    by_size = {size: r for (_, r), size in zip(results[-len(args.sizes):], args.sizes, strict=True)}
    if len(by_size) >= 2:
        small, large = min(by_size), max(by_size)
        ratio = by_size[large]["best_s"] / by_size[small]["best_s"]
        print(f"growth: {large / small:.0f}x the names took {ratio:.1f}x the time "
              f"(linear = {large / small:.0f}x); peak RSS {by_size[small]['rss_mib']:.0f} -> "
              f"{by_size[large]['rss_mib']:.0f} MiB "
              f"(a child right after its imports: {by_size[large]['baseline_rss_mib']:.0f} MiB)")
    if 1_000_000 in by_size:
        r = by_size[1_000_000]
        rate = r["lines"] / r["best_s"]
        print(f"targets at 1M: >= 1,000,000 names/s: {'met' if rate >= 1e6 else 'MISSED'} ({rate:,.0f}); "
              f"peak RSS < 1024 MiB: {'met' if r['rss_mib'] < 1024 else 'MISSED'} ({r['rss_mib']:.0f} MiB)")
    sizes = [(size, key) for size, key in ((100_000, "100k"), (1_000_000, "1m")) if size in by_size]
    summary = {f"rate_{key}": round(by_size[size]["lines"] / by_size[size]["best_s"]) for size, key in sizes}
    summary.update({f"rss_mib_{key}": round(by_size[size]["rss_mib"], 1) for size, key in sizes})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
