"""``make bench BENCH_ARGS="--reading ml-25m"``: reading and checking a ratings file, as CSV and as
Parquet, each in a fresh process: wall time and peak RSS.

The file is a seeded synthetic catalogue of the given shape (written once into the work folder).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from export.data.synthetic import generate_ratings, parse_shape

ROOT = Path(__file__).resolve().parent.parent
HEADER = {"user_id": "userId", "item_id": "movieId"}


def write_files(shape: str, folder: Path, seed: int = 42) -> dict[str, Path]:
    """The synthetic ratings as ``ratings.csv`` (MovieLens' own header) and ``ratings.parquet``."""
    files = {"csv": folder / f"{shape}-ratings.csv", "parquet": folder / f"{shape}-ratings.parquet"}
    if all(p.is_file() for p in files.values()):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    frame = generate_ratings(*parse_shape(shape), seed=seed).rename(columns=HEADER)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    del frame
    pacsv.write_csv(table, files["csv"], pacsv.WriteOptions(quoting_style="none"))
    pq.write_table(table, files["parquet"])
    return files


def time_reading(path: Path) -> dict[str, Any]:
    """Read and check ``path`` with the project's reader in a fresh process."""
    code = ("import sys, time; from export.data.ratings_file import read_ratings\n"
            "t = time.perf_counter(); r = read_ratings(sys.argv[1]); s = time.perf_counter() - t\n"
            "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "print(s, len(r.frame), hwm)")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"reading {path} failed:\n{result.stderr[-2000:]}")
    seconds, rows, peak_kb = result.stdout.split()
    return {"read_and_check_s": float(seconds), "process_wall_s": wall, "rows": int(rows),
            "peak_rss_mb": int(peak_kb) / 1024, "file_mb": path.stat().st_size / 2**20}


def run_reading_bench(shape: str, work: Path, out: Path) -> dict[str, Any]:
    files = write_files(shape, work)
    results = {"shape": shape, "cpus": len(os.sched_getaffinity(0)),
               "formats": {kind: time_reading(path) for kind, path in files.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nreading {shape} ({results['formats']['csv']['rows']:,} ratings), {results['cpus']} CPUs")
    print(f"{'format':8s} {'file MB':>8s} {'read + check s':>15s} {'process s':>10s} {'peak RSS MB':>12s}")
    for kind, r in results["formats"].items():
        print(f"{kind:8s} {r['file_mb']:8.0f} {r['read_and_check_s']:15.2f} {r['process_wall_s']:10.2f} "
              f"{r['peak_rss_mb']:12.0f}")
    print(f"written: {out}")
    return results
