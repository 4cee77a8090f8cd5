"""``python -m evaluation.verify`` (``make verify``): compare a published run with the torch models.

Loads each model's torch weights from the run's bundle, recomputes every table of the run with
torch (``Table.verify``: every prediction, every top-N list, every similar-items list, under the
run's rules), and fails on any difference beyond tolerance.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from contract.checksums import sha256_file
from contract.cli import run_cli
from contract.errors import VerificationError
from contract.paths import DEFAULT_OUTPUT_ROOT
from contract.publish import LATEST
from contract.store import Location, follow_latest, is_remote, mirror, parse_location
from scoring.bundle import load_bundle
from scoring.bundle_fetch import local_bundle
from scoring.rules import rules_of_run
from scoring.settings import DEFAULT_SIMILAR_K, PassSettings
from scoring.tables import chosen

from .torch_models import TorchModel

log = logging.getLogger(__name__)


def local_run(location: Location) -> Path:
    """A local directory holding the run at ``location``; a run on a store (its folder, or the
    root whose ``_LATEST`` names it) is copied here first."""
    if not is_remote(location):
        return Path(location)
    folder = follow_latest(str(location))
    if folder is None:
        raise VerificationError(f"{location}: no published run here (no manifest.json, no _LATEST)")
    return mirror(folder.uri)


def run_bundle(manifest: dict) -> Path:
    """The bundle a run was scored from: its folder on this machine, else fetched from the store it came from."""
    entry = manifest["bundle"]
    path = Path(entry["path"])
    return local_bundle(entry["uri"]) if not path.is_dir() and "uri" in entry else path


def check_files(run_dir: Path, manifest: dict) -> None:
    """Every table file the manifest lists is there with its SHA-256."""
    for name, digest in manifest["files"].items():
        path = run_dir / name
        if not path.is_file():
            raise VerificationError(f"{path}: listed in the run's manifest but missing")
        if sha256_file(path) != digest:
            raise VerificationError(f"{path}: sha256 differs from the run's manifest; the file was changed")


def verify_run(location: Location) -> dict[str, dict[str, float]]:
    """Verify every model and table of a published run; return the figures per model."""
    run_dir = local_run(location)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise VerificationError(f"{manifest_path}: no published run here (run `make score` first)")
    manifest = json.loads(manifest_path.read_text())
    bundle = load_bundle(run_bundle(manifest), manifest["models"])
    settings = PassSettings(top_n=manifest["top_n"], similar_k=manifest.get("similar_k", DEFAULT_SIMILAR_K),
                            rules=rules_of_run(run_dir, bundle.item_ids))
    figures = {}
    for model in manifest["models"]:
        torch_model = TorchModel(bundle, model)
        figure: dict[str, float] = {}
        for table in chosen(tuple(manifest["tables"])):
            figure.update(table.verify(run_dir, bundle, model, torch_model, settings))
        log.info("%s: every row matches torch %s", model, figure)
        figures[model] = figure
    check_files(run_dir, manifest)   # after the rows: a changed row is named by what changed in it
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.verify", description=__doc__)
    parser.add_argument("--run", type=parse_location, default=DEFAULT_OUTPUT_ROOT / LATEST,
                        help="published run directory, or on a store a run's folder or the output root "
                             "(its _LATEST run) (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    def action() -> None:
        figures = verify_run(args.run)
        run = args.run if is_remote(args.run) else str(Path(args.run).resolve())
        print(json.dumps({"run": run, "verified": figures}, indent=2))

    return run_cli(action, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
