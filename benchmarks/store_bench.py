"""``make bench BENCH_ARGS="--store s3"``: the scoring stage publishing to local disk and to an S3
store (moto's server on 127.0.0.1, ``benchmarks.s3_server``), alternated in one run on one bundle.

The stage is timed from the process's start of work to the end of the publish (the runner's
``published`` line): bundle load, scoring, checks, manifest, then the rename and link switch
locally, or the upload, manifest, ``_SUCCESS`` and conditional ``_LATEST`` on the store. The
overhead is the store's median stage time less the local one's.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from contract.store import Store

PUBLISHED = re.compile(r"published (\S+) \(([\d.]+) s\)")


def _published_seconds(stderr: str) -> float:
    return float(PUBLISHED.findall(stderr)[-1][1])


def compare_roots(bundle: Path, work_dir: Path, models: tuple[str, ...], tables: tuple[str, ...], repeat: int,
                  scoring_args: list[str]) -> dict[str, Any]:
    """``repeat`` runs on each root, alternated; the median stage of each, their ratio, and the runs' sizes."""
    from .bench import run_scoring_process
    from .s3_server import start_server
    server = start_server()
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    try:
        root = f"s3://{server.new_bucket()}/recs"
        stages: dict[str, list[float]] = {"local": [], "store": []}
        manifest: dict[str, Any] = {}
        for _ in range(repeat):
            for kind, output in (("local", str(work_dir / "output-store-bench")), ("store", root)):
                run = run_scoring_process(bundle, output, models, tables, ["--keep", "1", *scoring_args],
                                          keep_stderr=True)
                stages[kind].append(_published_seconds(run["stderr"]))
                manifest = run["manifest"]
        folder = Store.open(f"{root}/{manifest['run_id']}")
        run_bytes = sum(folder.fs.get_file_info(f"{folder.path}/{name}").size for name in folder.files())
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    local, store = float(np.median(stages["local"])), float(np.median(stages["store"]))
    return {"stage_s": {"local": local, "store": store}, "stage_s_runs": stages, "overhead_s": store - local,
            "ratio": store / local, "run_mb": run_bytes / 2**20, "tables": list(tables), "models": list(models),
            "pairs": manifest["n_users"] * manifest["n_items"] * len(models)}


def run_store_bench(args: argparse.Namespace) -> dict[str, Any]:
    import json

    from contract.cli import parse_names
    from export.models import registry
    from scoring.bundle import load_bundle
    from scoring.tables import names as table_names

    from .bench import train_bundle
    requested = parse_names("--models", args.models, registry.names()) if args.models else None
    bundle_path, _ = train_bundle(args, requested)
    bundle = load_bundle(bundle_path, list(requested) if requested else None)
    tables = parse_names("--tables", args.tables, table_names())
    figures = compare_roots(bundle_path, args.work_dir, tuple(bundle.models), tables, args.repeat, args.scoring_args)
    figures["shape"] = args.synthetic or "MovieLens 100K"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(f"\n{figures['shape']}: {figures['pairs']:,} pairs, {', '.join(tables)}, run of {figures['run_mb']:.1f} MB")
    print(f"stage, local disk: {figures['stage_s']['local']:.2f} s (runs {figures['stage_s_runs']['local']})")
    print(f"stage, S3 (moto on 127.0.0.1): {figures['stage_s']['store']:.2f} s "
          f"(runs {figures['stage_s_runs']['store']})")
    print(f"publish overhead: {figures['overhead_s']:+.2f} s, {figures['ratio']:.2f}x the local stage")
    print(f"written: {args.out}")
    return figures
