"""``make bench BENCH_ARGS="--spark"``: the Spark engine against the local engine on the same bundle,
both tables, in one run: stage times, Spark's start-up and preflight job apart, pairs per second per core, and the
peak memory of the driver, the JVM and Spark's Python workers (sampled from /proc)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 0.1


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def _rss_by_kind(pid: int) -> dict[str, float]:
    """Resident MB of the driver (``pid``), the JVM(s) and the Python workers below it, now."""
    totals = {"driver": 0.0, "jvm": 0.0, "python_workers": 0.0}
    for process in _tree(pid):
        try:
            name = open(f"/proc/{process}/comm").read().strip()
            rss = next(int(line.split()[1]) for line in open(f"/proc/{process}/status") if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            continue
        kind = "driver" if process == pid else "jvm" if name == "java" else "python_workers"
        totals[kind] += rss / 1024
    return totals


def run_measured(command: list[str]) -> tuple[subprocess.CompletedProcess, float, dict[str, float]]:
    """Run ``command``; its wall time and the peak memory of each kind of process it started."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    peaks = {"driver": 0.0, "jvm": 0.0, "python_workers": 0.0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for kind, mb in _rss_by_kind(process.pid).items():
                peaks[kind] = max(peaks[kind], mb)
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-2000:]}")
    return result, time.perf_counter() - started, peaks


RUNS = {"local": [], "spark": ["--spark-writer", "tasks"], "spark_dataframe_writer": ["--spark-writer", "spark"]}
"""What is compared: the local engine, the Spark engine with its tasks writing their part files,
and the Spark engine with Spark's own Parquet writer."""


def compare(bundle: Path, work: Path, master: str, cores: int) -> dict[str, Any]:
    """One local run and one run of each Spark writer on the same bundle, both tables."""
    figures: dict[str, Any] = {}
    for engine, writer in RUNS.items():
        extra = ["--engine", "spark", "--spark-master", master, *writer] if writer else []
        command = [sys.executable, "-m", "scoring", "--bundle", str(bundle), "--output-root",
                   str(work / f"output-{engine}"), "--no-report", *extra]
        result, wall, peaks = run_measured(command)
        manifest = json.loads((Path(result.stdout.strip().splitlines()[-1]) / "manifest.json").read_text())
        seconds = manifest["seconds"]
        if writer:
            first = seconds[manifest["models"][0]]
            start, preflight, jobs = first["spark_start"], first["spark_preflight"], first["spark_jobs"]
        else:
            start, preflight, jobs = 0.0, 0.0, sum(seconds[m]["total"] for m in manifest["models"])
        pairs = manifest["n_users"] * manifest["n_items"] * len(manifest["models"])
        figures[engine] = {"process_wall_s": wall, "stage_s": seconds["total"], "spark_start_s": start,
                           "spark_preflight_s": preflight, "scoring_s": jobs, "pairs": pairs, "pairs_per_s_per_core": pairs / jobs / cores,
                           "peak_rss_mb": peaks}
    figures["spark_over_local_scoring"] = figures["spark"]["scoring_s"] / figures["local"]["scoring_s"]
    figures["spark_dataframe_writer_over_local_scoring"] = \
        figures["spark_dataframe_writer"]["scoring_s"] / figures["local"]["scoring_s"]
    figures["spark_with_preflight_over_local_scoring"] = \
        (figures["spark"]["scoring_s"] + figures["spark"]["spark_preflight_s"]) / figures["local"]["scoring_s"]
    return figures


def print_comparison(name: str, figures: dict[str, Any]) -> None:
    print(f"\n{name}: {figures['local']['pairs']:,} pairs, both tables")
    print(f"{'engine':23s} {'process s':>10s} {'Spark start s':>14s} {'preflight s':>12s} {'scoring s':>10s} {'pairs/s/core':>13s} "
          f"{'driver MB':>10s} {'JVM MB':>8s} {'workers MB':>11s}")
    for engine in RUNS:
        f = figures[engine]
        print(f"{engine:23s} {f['process_wall_s']:10.2f} {f['spark_start_s']:14.2f} {f['spark_preflight_s']:12.2f} {f['scoring_s']:10.2f} "
              f"{f['pairs_per_s_per_core'] / 1e6:12.2f}M {f['peak_rss_mb']['driver']:10.0f} "
              f"{f['peak_rss_mb']['jvm']:8.0f} {f['peak_rss_mb']['python_workers']:11.0f}")
    print(f"Spark / local scoring time: {figures['spark_over_local_scoring']:.2f}x (tasks write their parts), "
          f"{figures['spark_dataframe_writer_over_local_scoring']:.2f}x (Spark's Parquet writer); with the "
          f"preflight job (the first job's start-up) counted: {figures['spark_with_preflight_over_local_scoring']:.2f}x")
