"""``python -m benchmarks.bench`` (``make bench``): per-stage wall times, throughput and peak memory.

Trains and exports on MovieLens 100K (or a synthetic catalogue of a given shape), then runs
the scoring job as its own onnxruntime-only process (torch blocked), a few times over, and reads
its peak RSS; the figures are the median run's, all stage times are kept.
In the same run it times the alternatives on the same bundle (torch eager pairwise scoring,
onnxruntime on the pairwise graphs, a plain GEMM floor for MF), the similar_items table alone,
and top-N-only runs with and without rules on the lists.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from contract.bundle_format import torch_weights_file
from contract.cli import parse_names, run_cli
from contract.feedback import EXPLICIT, FEEDBACK_KINDS, IMPLICIT
from contract.machine import available_cpus
from contract.pairs import pair_batches
from contract.store import parse_location
from evaluation.torch_models import PAIR_BATCH, load_torch_model, pairwise_batches
from export.cli import build_parser as export_parser
from export.cli import run as train_and_export
from export.models import registry
from scoring.bundle import Bundle, load_bundle
from scoring.drift import RunFiles
from scoring.sessions import ModelScorer
from scoring.tables import DEFAULT_TABLES, needs_ratings
from scoring.tables import names as table_names

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


def timed(action, *args, **kwargs) -> tuple[Any, float]:
    started = time.perf_counter()
    value = action(*args, **kwargs)
    return value, time.perf_counter() - started


def run_scoring_process(bundle: Path, output: Path | str, models: tuple[str, ...], tables: tuple[str, ...],
                        extra: list[str], keep_stderr: bool = False) -> dict[str, Any]:
    """Run the scoring CLI as a separate torch-free process; return its wall time, peak RSS and
    manifest (and its log lines with ``keep_stderr``). ``output`` may be a store URI."""
    # Peak RSS is the child's own VmHWM: getrusage/wait4 would also count the pages the child
    # shared with this (torch-laden) process between fork and exec.
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['scoring'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('scoring', run_name='__main__', alter_sys=True)\n"
            "finally:\n    print('VmHWM', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0],"
            " file=sys.stderr)")
    command = [sys.executable, "-c", code, "--bundle", str(bundle), "--output-root", str(output),
               "--models", ",".join(models), "--tables", ",".join(tables), "--no-report", *extra]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"scoring failed:\n{stderr[-2000:]}")
    peak_kb = int(stderr.rsplit("VmHWM", 1)[1].split()[0])
    manifest = RunFiles.at(parse_location(stdout.strip().splitlines()[-1])).manifest()
    return {"process_wall_s": wall, "peak_rss_mb": peak_kb / 1024, "manifest": manifest,
            **({"stderr": stderr} if keep_stderr else {})}


def eager_pairwise_seconds(bundle: Bundle, model: str, limit_pairs: int | None) -> tuple[float, int]:
    """Torch eager over (a prefix of) all pairs: the trained module's own ``forward`` on the pairwise
    graph's inputs, as a user would score pairs with it (the LSTM runs every step of each window)."""
    module = load_torch_model(bundle, model)
    family = registry.get(model)
    started, total = time.perf_counter(), 0
    with torch.no_grad():
        for users, _, inputs in pairwise_batches(bundle, family, model, limit_pairs):
            module(*inputs)
            total += len(users)
    return time.perf_counter() - started, total


def ort_pairwise_seconds(bundle: Bundle, model: str, limit_pairs: int | None, threads: int) -> tuple[float, int]:
    """onnxruntime on the pairwise graph over (a prefix of) all pairs, through the scoring engine."""
    scorer = ModelScorer.open(bundle.graphs(model), bundle.context, threads)
    seconds, total = 0.0, 0
    for users, items in pair_batches(bundle.n_users, bundle.n_items, PAIR_BATCH, limit_pairs):
        t = time.perf_counter()
        scorer.rate_pairs(users, items)
        seconds += time.perf_counter() - t
        total += len(users)
    return seconds, total


def gemm_floor_seconds(bundle, factors: tuple[str, ...], repeats: int = 3, chunk_pairs: int = 4_000_000) -> float:
    """Best of a few runs of MF's ``U @ V^T`` products, one per ``(user, item)`` factor pair named
    in ``factors`` by prefix ("" the rating factors, "rank_" the ranking head's own): the
    arithmetic floor of MF's graph, in row blocks into reused buffers so a large catalogue fits."""
    state = torch.load(bundle.path / torch_weights_file("mf"), map_location="cpu", weights_only=True)
    pairs = [(state[f"{prefix}user_embedding.weight"].numpy(),
              np.ascontiguousarray(state[f"{prefix}item_embedding.weight"].numpy().T)) for prefix in factors]
    n_users, n_items = pairs[0][0].shape[0], pairs[0][1].shape[1]
    rows = max(1, chunk_pairs // n_items)
    buffers = [np.empty((rows, n_items), np.float32) for _ in pairs]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, n_users, rows):
            for (p, q_t), buffer in zip(pairs, buffers):
                block = p[start:start + rows]
                np.matmul(block, q_t, out=buffer[:len(block)])
        best = min(best, time.perf_counter() - started)
    return best


def train_bundle(args: argparse.Namespace, models: tuple[str, ...] | None) -> tuple[Path, float]:
    """Train and export (or reuse) the bundle the benchmark scores, in this process with
    ``--jobs 1`` (one model at a time on every core); its path and wall time. ``models`` None:
    the export's own default for the data (a family whose catalogue limit the data exceeds is
    left out)."""
    # The benchmark measures speed: a bundle trained with other settings is not judged by the gate.
    train_argv = ["--artifacts", str(args.work_dir / "artifacts"), *(["--models", ",".join(models)] if models else []),
                  "--jobs", str(args.jobs),
                  "--device", args.device, "--accept-worse", "--output-root", str(args.work_dir / "output")]
    for option, value in (("--synthetic", args.synthetic), ("--feedback", args.feedback),
                          ("--time-budget", args.time_budget),
                          ("--max-epochs", args.max_epochs), ("--batch-size", args.batch_size)):
        if value:
            train_argv += [option, str(value)]
    if args.force_train:
        train_argv.append("--force")
    _, wall = timed(train_and_export, export_parser().parse_args(train_argv))
    return (args.work_dir / "artifacts" / "latest").resolve(), wall


def training_peak_rss_mb() -> float:
    """Peak RSS of training so far: this process's (training with ``--jobs 1`` is its first and
    largest work) or, when workers trained, the largest worker's."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, workers) / 1024


def machine(args: argparse.Namespace) -> dict[str, Any]:
    return {"cpus": available_cpus(), "python": platform.python_version(), "train_device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "onnxruntime": ort.__version__, "torch": torch.__version__, "processor": platform.processor()}


def scoring_figures(bundle: Bundle, args: argparse.Namespace, models: tuple[str, ...],
                    tables: tuple[str, ...]) -> dict[str, Any]:
    """Run the scoring process ``--repeat`` times; the median run's figures, every run's stage time."""
    runs = [run_scoring_process(bundle.path, args.work_dir / "output", models, tables, args.scoring_args)
            for _ in range(args.repeat)]
    stages = [run["manifest"]["seconds"]["total"] for run in runs]
    median = runs[int(np.argsort(stages)[(len(stages) - 1) // 2])]  # the lower of two middles
    seconds = median["manifest"]["seconds"]
    return {
        "process_wall_s": median["process_wall_s"], "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
        "stage_s": seconds["total"], "stage_s_runs": stages, "load_s": seconds["load"],
        "per_model": {m: seconds[m] for m in models},
        "pairs_per_s": bundle.n_users * bundle.n_items * len(models) / seconds["total"],
        "tables": list(tables),
    }


def similar_items_figures(bundle: Bundle, args: argparse.Namespace, models: tuple[str, ...]) -> dict[str, Any]:
    """The similar_items table alone (``--similar-k`` 20), ``--repeat`` runs: the median run's
    stage time and each model's time in the table, and the largest peak RSS."""
    runs = [run_scoring_process(bundle.path, args.work_dir / "output", models, ("similar_items",), args.scoring_args)
            for _ in range(args.repeat)]
    stages = [run["manifest"]["seconds"]["total"] for run in runs]
    median = runs[int(np.argsort(stages)[(len(stages) - 1) // 2])]
    seconds = median["manifest"]["seconds"]
    per_model = {m: seconds[m]["similar_items_total"] for m in models}
    return {"stage_s": seconds["total"], "stage_s_runs": stages, "table_s": sum(per_model.values()),
            "per_model": per_model, "peak_rss_mb": max(run["peak_rss_mb"] for run in runs),
            "items": bundle.n_items}


RULES_EXCLUDED_SHARE = 0.05
"""Share of the catalogue the benchmark's ``--exclude-items`` file names (with ids it lacks too)."""
RULES_CANDIDATE_SHARE = 0.9
"""Share of the catalogue its ``--candidates`` file names."""


def write_rule_files(bundle: Bundle, folder: Path) -> list[str]:
    """Seeded rule files over ``bundle``'s catalogue, as scoring options."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(0)
    ids = bundle.item_ids
    excluded = ids[rng.choice(len(ids), max(1, int(RULES_EXCLUDED_SHARE * len(ids))), replace=False)]
    candidates = ids[rng.choice(len(ids), int(RULES_CANDIDATE_SHARE * len(ids)), replace=False)]
    folder.mkdir(parents=True, exist_ok=True)
    unknown = [f"unknown-{i}" for i in range(10)] if ids.dtype.kind == "U" else list(range(-10, 0))
    pq.write_table(pa.table({"item_id": excluded.tolist() + unknown}), folder / "exclude.parquet")
    pq.write_table(pa.table({"item_id": candidates.tolist()}), folder / "candidates.parquet")
    return ["--exclude-items", str(folder / "exclude.parquet"), "--candidates", str(folder / "candidates.parquet")]


def rules_figures(bundle: Bundle, args: argparse.Namespace, models: tuple[str, ...]) -> dict[str, Any]:
    """What the rules cost a top-N-only run: runs without and with both rule files, alternating,
    ``--repeat`` of each; the median stage times, and the change of the time spent selecting the
    lists (every model's ``top_n`` seconds, where the rules are applied) as a share of the top-N
    stage without them."""
    rules = write_rule_files(bundle, args.work_dir / "rules")
    without, with_rules = [], []
    for _ in range(args.repeat):
        for runs, extra in ((without, []), (with_rules, rules)):
            runs.append(run_scoring_process(bundle.path, args.work_dir / "output", models, ("recommendations",),
                                            [*args.scoring_args, *extra])["manifest"])
    plain = float(np.median([m["seconds"]["total"] for m in without]))
    ruled = float(np.median([m["seconds"]["total"] for m in with_rules]))
    selecting = {name: float(np.median([sum(m["seconds"][model]["top_n"] for model in models) for m in runs]))
                 for name, runs in (("without", without), ("with", with_rules))}
    applying = selecting["with"] - selecting["without"]
    return {"stage_s_without": plain, "stage_s_with": ruled, "ratio": ruled / plain,
            "stage_s_runs_without": [m["seconds"]["total"] for m in without],
            "stage_s_runs_with": [m["seconds"]["total"] for m in with_rules],
            "selection_s_without": selecting["without"], "selection_s_with": selecting["with"],
            "rules_s": applying, "rules_share_of_topn_stage": applying / plain,
            "eligible_items": with_rules[0]["rules"]["eligible_items"], "items": bundle.n_items}


def comparisons(bundle: Bundle, args: argparse.Namespace, models: tuple[str, ...], tables: tuple[str, ...],
                scoring: dict[str, Any]) -> dict[str, Any]:
    """The alternatives on the same bundle: torch eager and onnxruntime pairwise, and MF's GEMM floor."""
    out: dict[str, Any] = {}
    scale = bundle.n_users * bundle.n_items
    for model in models:
        eager, n_eager = eager_pairwise_seconds(bundle, model, args.compare_pairs)
        onnx_pairwise, n_ort = ort_pairwise_seconds(bundle, model, args.compare_pairs, available_cpus())
        all_items = scoring["per_model"][model]["onnxruntime"]
        out[model] = {
            "torch_eager_pairwise_s": eager * scale / n_eager, "measured_pairs": n_eager,
            "onnxruntime_pairwise_s": onnx_pairwise * scale / n_ort,
            "onnxruntime_all_items_s": all_items,
            "speedup_all_items_vs_eager": eager * scale / n_eager / max(all_items, 1e-9),
        }
    # MF's ranking is (p * s) @ Q^T + R @ T^T: a top-N-only run needs those two products for every
    # pair; a run with predictions also needs the rating's P @ Q^T.
    factors = ("", "", "rank_") if needs_ratings(tables) else ("", "rank_")
    out["gemm_floor_mf_s"] = gemm_floor_seconds(bundle, factors) if "mf" in models else None
    out["scoring_stage_speedup_vs_eager"] = sum(out[m]["torch_eager_pairwise_s"] for m in models) / scoring["stage_s"]
    return out


def training_figures(manifest: dict[str, Any], models: tuple[str, ...]) -> dict[str, Any]:
    """Per model: test RMSE, epochs, and training throughput (ratings per second of the training
    passes, validation left out) with the batch size used."""
    out = {}
    for m in models:
        entry = manifest["models"][m]
        curve = [e for e in entry["learning_curve"] + entry["refit_curve"] if "train_seconds" in e]
        seconds = sum(e["train_seconds"] for e in curve)
        out[m] = {"test_metrics": entry["test_metrics"], "epochs": len(entry["learning_curve"]),
                  "refit_epochs": len(entry["refit_curve"]), "best_epoch": entry["best_epoch"],
                  "out_of_time": entry["out_of_time"],
                  "batch_size": entry["batch_size"], "learning_rate": entry["learning_rate"],
                  "train_seconds": seconds,
                  "ratings_per_s": sum(e["ratings"] for e in curve) / seconds if seconds else None}
    return out


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    requested = parse_names("--models", args.models, registry.names()) if args.models else None
    tables = parse_names("--tables", args.tables, table_names())
    bundle_path, train_wall = train_bundle(args, requested)
    training_peak_mb = training_peak_rss_mb()
    bundle = load_bundle(bundle_path, list(requested) if requested else None)
    models = tuple(bundle.models)
    manifest = bundle.manifest
    results: dict[str, Any] = {
        "shape": {"users": bundle.n_users, "items": bundle.n_items, "pairs": bundle.n_users * bundle.n_items,
                  "data": args.synthetic or "MovieLens 100K"},
        "machine": machine(args),
        "train_and_export_wall_s": train_wall,
        "jobs": args.jobs,
        "train_s": {m: manifest["models"][m]["train_seconds"] for m in models},
        "export_s": {m: manifest["models"][m]["export_seconds"] for m in models},
        "training": training_figures(manifest, models),
        "training_peak_rss_mb": training_peak_mb,
        "feedback": args.feedback,
        "floor_rmse_stars": manifest.get("floor_rmse_stars"),
    }
    if not args.training_only:
        results["scoring"] = scoring_figures(bundle, args, models, tables)
        results["comparisons"] = comparisons(bundle, args, models, tables, results["scoring"])
        if not args.no_table_figures:
            similar_models = tuple(m for m in models if bundle.graphs(m).has("item_vectors"))
            results["similar_items"] = similar_items_figures(bundle, args, similar_models)
            results["rules"] = rules_figures(bundle, args, models)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print_table(results, models)
    print(f"written: {args.out}")
    return results


def run_spark_bench(args: argparse.Namespace) -> dict[str, Any]:
    """The local and Spark engines on the same bundle (trained or reused as for the main bench)."""
    from .spark_vs_local import compare, print_comparison
    bundle, _ = train_bundle(args, parse_names("--models", args.models, registry.names()) if args.models else None)
    figures = compare(bundle, args.work_dir, "local[2]", 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print_comparison(args.synthetic or "MovieLens 100K", figures)
    print(f"written: {args.out}")
    return figures


def print_table(r: dict[str, Any], models: tuple[str, ...]) -> None:
    print(f"\nshape: {r['shape']['users']:,} users x {r['shape']['items']:,} items = {r['shape']['pairs']:,} pairs "
          f"({r['shape']['data']}), {r['machine']['cpus']} CPUs")
    device = r["machine"].get("gpu") or "CPU"
    print(f"train + export (wall): {r['train_and_export_wall_s']:.1f} s (training on {device})")
    if "scoring" in r:
        print_scoring(r, models)
    if "similar_items" in r:
        print_tables(r)
    print_training(r, models)


def print_scoring(r: dict[str, Any], models: tuple[str, ...]) -> None:
    s, c = r["scoring"], r["comparisons"]
    runs = s.get("stage_s_runs", [s["stage_s"]])
    print(f"scoring process (median of {len(runs)} runs, stages {', '.join(f'{t:.3f}' for t in runs)} s): "
          f"{s['process_wall_s']:.2f} s wall, scoring stage {s['stage_s']:.3f} s "
          f"(bundle load {s['load_s']:.3f} s), peak RSS {s['peak_rss_mb']:.0f} MB (largest), "
          f"{s['pairs_per_s'] / 1e6:.1f} M pairs/s, tables {','.join(s['tables'])}")
    print(f"{'model':6s} {'train s':>8s} {'export s':>8s} {'model s':>8s} {'ort s':>8s} {'rate s':>7s} "
          f"{'top-N s':>8s} {'write s':>8s} {'eager pairwise s':>17s} {'ort pairwise s':>15s} {'speed-up':>9s}")
    for m in models:
        pm = s["per_model"][m]
        print(f"{m:6s} {r['train_s'][m]:8.1f} {r['export_s'][m]:8.1f} {pm['total']:8.3f} {pm['onnxruntime']:8.3f} "
              f"{pm.get('onnxruntime_pairs', 0.0):7.3f} {pm['top_n']:8.3f} {pm['write']:8.3f} "
              f"{c[m]['torch_eager_pairwise_s']:17.2f} {c[m]['onnxruntime_pairwise_s']:15.2f} "
              f"{c[m]['speedup_all_items_vs_eager']:8.0f}x")
    print("  (model s: the model's whole pass; ort s: all-items or ranking graph; rate s: pairwise graph "
          "rating the chosen top-N pairs in top-N-only runs; top-N and write run on a second thread)")
    if c.get("gemm_floor_mf_s") is not None:
        print(f"GEMM floor for MF (U @ V^T for the products the run needs): {c['gemm_floor_mf_s'] * 1e3:.1f} ms")
    print(f"whole scoring stage vs torch eager pairwise: {c['scoring_stage_speedup_vs_eager']:.0f}x faster")


def print_tables(r: dict[str, Any]) -> None:
    s, q = r["similar_items"], r["rules"]
    print(f"similar_items ({s['items']:,} items, top 20, models {', '.join(s['per_model'])}): the table "
          f"{s['table_s']:.3f} s of a {s['stage_s']:.3f} s stage (runs {', '.join(f'{t:.3f}' for t in s['stage_s_runs'])} s), "
          f"per model {', '.join(f'{m} {t:.3f} s' for m, t in s['per_model'].items())}; peak RSS {s['peak_rss_mb']:.0f} MB")
    print(f"rules ({q['eligible_items']:,} of {q['items']:,} items eligible), top-N-only runs: stage "
          f"{q['stage_s_with']:.3f} s with them, {q['stage_s_without']:.3f} s without ({q['ratio']:.3f}x, medians); "
          f"selecting the lists took {q['selection_s_with']:.3f} s with them, {q['selection_s_without']:.3f} s without: "
          f"{q['rules_s'] * 1e3:+.1f} ms, {100 * q['rules_share_of_topn_stage']:+.2f}% of the top-N stage")


def print_training(r: dict[str, Any], models: tuple[str, ...]) -> None:
    floor = r.get("floor_rmse_stars")
    how = "one model at a time" if r["jobs"] == 1 else f"{r['jobs']} models at a time"
    print(f"\ntraining ({how}); floor RMSE of the planted truth: {'-' if floor is None else f'{floor:.4f}'}; "
          f"peak RSS {r['training_peak_rss_mb']:.0f} MB")
    implicit = r.get("feedback") == IMPLICIT
    print(f"{'model':6s} {'NDCG@10' if implicit else 'test RMSE':>10s} {'/ floor':>8s} {'epochs':>7s} {'best':>5s} "
          f"{'refit':>6s} {'batch':>6s} {'ratings/s':>10s} {'train s':>8s} {'stopped by budget':>18s}")
    for m in models:
        t = r["training"][m]
        figure = t["test_metrics"]["ndcg_at_10" if implicit else "rmse_stars"]
        ratio = "-" if floor is None or implicit else f"{figure / floor:.3f}"
        rate = "-" if t["ratings_per_s"] is None else f"{t['ratings_per_s'] / 1e3:.0f}K"
        print(f"{m:6s} {figure:10.4f} {ratio:>8s} {t['epochs']:7d} {t['best_epoch']:5d} "
              f"{t['refit_epochs']:6d} {t['batch_size']:6d} {rate:>10s} {t['train_seconds']:8.0f} "
              f"{str(t['out_of_time']):>18s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__)
    parser.add_argument("--synthetic", metavar="SHAPE",
                        help="USERS,ITEMS,RATINGS or ml-1m, ml-20m, ml-25m (default: MovieLens 100K itself)")
    parser.add_argument("--feedback", choices=FEEDBACK_KINDS, default=EXPLICIT,
                        help="train on the data as ratings or as implicit interactions (default: %(default)s)")
    parser.add_argument("--models", help="models (default: every registered family the data allows)")
    parser.add_argument("--tables", default=",".join(DEFAULT_TABLES), help="tables to write (default: %(default)s)")
    parser.add_argument("--time-budget", type=float, help="training seconds per model (large shapes)")
    parser.add_argument("--max-epochs", type=int, help="cap every model's epochs")
    parser.add_argument("--batch-size", type=int, help="training mini-batch size (large shapes)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="models trained at once (default: %(default)s, one at a time on every core)")
    parser.add_argument("--no-table-figures", action="store_true",
                        help="leave out the similar_items table's runs and the rules' runs")
    parser.add_argument("--training-only", action="store_true",
                        help="train, export and report training figures; no scoring runs (the largest shapes)")
    parser.add_argument("--force-train", action="store_true", help="retrain even if the bundle is up to date")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where torch trains (default: %(default)s); scoring always runs onnxruntime on the CPU")
    parser.add_argument("--compare-pairs", type=int, default=None,
                        help="time the eager/pairwise comparisons on this many pairs and scale (default: all)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="scoring processes to run; the table and ratios use the median run (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=Path("bench"), help="bundles and runs (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("bench") / "bench.json", help="JSON (default: %(default)s)")
    parser.add_argument("--reading", metavar="SHAPE",
                        help="instead: time reading and checking a synthetic ratings file of this shape (e.g. "
                             "ml-25m) as CSV and as Parquet")
    parser.add_argument("--feedback-throughput", metavar="SHAPE",
                        help="instead: each family's training throughput on a synthetic catalogue of this shape "
                             "(e.g. ml-20m) read as ratings and as implicit interactions, alternated")
    parser.add_argument("--spark", action="store_true",
                        help="instead: score the bundle with the local engine and with --engine spark (local[2]) "
                             "and compare them")
    parser.add_argument("--store", choices=("s3",),
                        help="instead: score the bundle publishing to local disk and to an S3 store (moto's "
                             "server on 127.0.0.1), alternated, and compare the stage times")
    parser.add_argument("--scoring-args", nargs=argparse.REMAINDER, default=[],
                        help="further options for the scoring process, e.g. --chunk-pairs 65536")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat: expected a positive integer, got {args.repeat}")
    if args.spark:
        return run_cli(lambda: run_spark_bench(args))
    if args.store:
        from .store_bench import run_store_bench
        return run_cli(lambda: run_store_bench(args))
    if args.feedback_throughput:
        from .feedback_throughput import run_feedback_bench
        models = parse_names("--models", args.models, registry.names()) if args.models else ("mf", "dense", "lstm")
        return run_cli(lambda: run_feedback_bench(args.feedback_throughput, models, args.time_budget or 30.0,
                                                  args.repeat, args.out))
    if args.reading:
        from .reading import run_reading_bench
        return run_cli(lambda: run_reading_bench(args.reading, args.work_dir / "reading", args.out))
    return run_cli(lambda: run_bench(args))


if __name__ == "__main__":
    sys.exit(main())
