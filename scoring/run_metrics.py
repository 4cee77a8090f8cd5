"""A scoring run's figures as Prometheus samples (``--metrics-file``), read from its manifest."""
from __future__ import annotations

from typing import Any

from contract.metrics import Sample


def drift_samples(drift: dict[str, Any]) -> list[Sample]:
    """The run-to-run figures of each model."""
    out = []
    for model, figures in drift.get("models", {}).items():
        for key, help_text in (("topn_changed_share", "share of users whose top-N list changed since the last run"),
                               ("prediction_mean_abs_change", "mean |prediction change| since the last run"),
                               ("prediction_max_abs_change", "largest |prediction change| since the last run"),
                               ("similar_changed_share", "share of items whose similar-items list changed since the "
                                                         "last run"),
                               ("comparable_share", "share of the run's users, items or pairs the last run also held"),
                               ("coverage", "share of the catalogue in any top-N list")):
            if figures.get(key) is not None:
                out.append(Sample(f"drift_{key}" if key != "coverage" else "catalogue_coverage", figures[key],
                                  {"model": model}, help_text))
    return out


def run_samples(manifest: dict[str, Any]) -> list[Sample]:
    """Durations per stage and model, rows, parity and drift of a published run."""
    seconds = manifest["seconds"]
    out = [Sample("stage_seconds", seconds[stage], {"stage": stage}, "seconds spent per stage")
           for stage in ("load", "total") if stage in seconds]
    for model in manifest["models"]:
        for stage, value in seconds.get(model, {}).items():
            out.append(Sample("model_stage_seconds", value, {"model": model, "stage": stage},
                              "seconds per model and stage (summed over tasks on Spark)"))
    for table, counts in manifest["row_counts"].items():
        out += [Sample("rows", rows, {"table": table, "model": model}, "rows published") for model, rows in counts.items()]
    for model, parity in manifest["parity"].items():
        if parity.get("max_abs_diff") is not None:
            out.append(Sample("parity_max_abs_diff", parity["max_abs_diff"], {"model": model},
                              "largest |onnxruntime - torch| at the reference pairs, [0, 1] scale"))
    out += drift_samples(manifest.get("drift", {}))
    out += [Sample(f"{table}_{figure}", value, {"model": model}, f"the {table} table's {figure.replace('_', ' ')}")
            for table, models in manifest.get("table_figures", {}).items() for model, figures in models.items()
            for figure, value in figures.items() if isinstance(value, (int, float)) and value is not None]
    out.append(Sample("published", 1, {"run_id": manifest["run_id"], "bundle_id": manifest["bundle"]["bundle_id"]},
                      "the run last published"))
    return out
