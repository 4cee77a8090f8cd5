"""``python -m benchmarks.nightly``: twenty nightly-style runs on MovieLens 100K, each night with
the ratings up to a later date (``--as-of``), then disk use of the artifacts and output roots.
Each night runs both stages as the examples do, with ``--keep 3``; what each exit status was is
printed, night by night."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_NIGHT = datetime(1998, 3, 1, tzinfo=timezone.utc)
"""MovieLens 100K's ratings run from September 1997 to April 1998."""


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nightly", description=__doc__)
    parser.add_argument("--nights", type=int, default=20)
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=5, help="epochs per model each night (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path, default=Path("bench") / "nightly")
    args = parser.parse_args(argv)
    artifacts, output = args.work_dir / "artifacts", args.work_dir / "output"
    nights = []
    for night in range(args.nights):
        as_of = (FIRST_NIGHT + timedelta(days=3 * night)).date().isoformat()
        codes = []
        for command in (["export", "--as-of", as_of, "--max-epochs", str(args.max_epochs)], ["scoring", "--no-report"]):
            stage = [sys.executable, "-m", *command, "--keep", str(args.keep), "--artifacts" if command[0] == "export"
                     else "--bundle", str(artifacts if command[0] == "export" else artifacts / "latest"),
                     "--output-root", str(output)]
            codes.append(subprocess.run(stage, cwd=ROOT, capture_output=True, text=True).returncode)
        nights.append({"as_of": as_of, "export_exit": codes[0], "scoring_exit": codes[1],
                       "bundles": len([p for p in artifacts.iterdir() if p.name[0].isdigit()]),
                       "runs": len([p for p in output.iterdir() if p.name[0].isdigit()])})
        print(json.dumps(nights[-1]), flush=True)
    print(f"after {args.nights} nights with --keep {args.keep}: artifacts {disk_mb(artifacts):.1f} MB "
          f"({nights[-1]['bundles']} bundles), output {disk_mb(output):.1f} MB ({nights[-1]['runs']} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
