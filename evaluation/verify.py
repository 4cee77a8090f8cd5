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

from contract.cli import run_cli
from contract.errors import VerificationError
from contract.paths import DEFAULT_OUTPUT_ROOT
from contract.publish import LATEST
from scoring.bundle import load_bundle
from scoring.rules import rules_of_run
from scoring.settings import DEFAULT_SIMILAR_K, PassSettings
from scoring.tables import chosen

from .torch_models import TorchModel

log = logging.getLogger(__name__)


def verify_run(run_dir: Path) -> dict[str, dict[str, float]]:
    """Verify every model and table of a published run; return the figures per model."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise VerificationError(f"{manifest_path}: no published run here (run `make score` first)")
    manifest = json.loads(manifest_path.read_text())
    bundle = load_bundle(Path(manifest["bundle"]["path"]), manifest["models"])
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
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.verify", description=__doc__)
    parser.add_argument("--run", type=Path, default=DEFAULT_OUTPUT_ROOT / LATEST,
                        help="published run directory (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    def action() -> None:
        figures = verify_run(args.run)
        print(json.dumps({"run": str(args.run.resolve()), "verified": figures}, indent=2))

    return run_cli(action, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
