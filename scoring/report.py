"""A self-contained HTML report of a run: model quality, learning curves, distributions,
ranking against baselines, and example recommendations with titles.

Every number on the page comes from ``report.json`` beside it, which gathers the run's
manifest, the bundle's manifest and, when ``make evaluate`` has run, its results. Plots need
matplotlib (the ``report`` extra); without it the page keeps its tables and says so.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from contract import strict_json
from contract.bundle_format import MANIFEST
from contract.cli import run_cli
from contract.feedback import EXPLICIT, IMPLICIT
from contract.paths import DEFAULT_EVALUATION, DEFAULT_OUTPUT_ROOT
from contract.publish import LATEST

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
EXAMPLE_USERS = 3


def fmt(value: float) -> str:
    """The one way a number is printed on the page (the tests rely on it)."""
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def gather(run_dir: Path, evaluation: Path | None) -> dict[str, Any]:
    """Everything the page shows, as one JSON-able dictionary."""
    run = json.loads((run_dir / "manifest.json").read_text())
    bundle_dir = Path(run["bundle"]["path"])
    bundle = json.loads((bundle_dir / MANIFEST).read_text())
    data: dict[str, Any] = {
        "run_id": run["run_id"], "bundle_id": bundle["bundle_id"], "top_n": run["top_n"],
        "baseline_global_mean": bundle["baseline_global_mean"],
        "rating_scale": bundle["rating_scale"],
        "feedback": bundle.get("feedback", EXPLICIT),
        "models": {m: {k: bundle["models"][m][k] for k in ("test_metrics", "untuned_reference_rmse_unit",
                                                           "learning_curve", "best_epoch", "histogram")
                       if k in bundle["models"][m]} for m in run["models"]},
        "examples": examples(run_dir, run),
        "example_titles": {t.name: t.examples_title.format(table=t.name.replace("_", " "), model="{model}",
                                                            top_n=run["top_n"], similar_k=run.get("similar_k"))
                           for t in _tables(run)},
        "evaluation": None,
        "gate": bundle.get("gate"),
        "data_checks": bundle.get("data_checks"),
        "drift": run.get("drift"),
        "table_figures": run.get("table_figures", {}),
    }
    if evaluation is not None and evaluation.is_file():
        report = json.loads(evaluation.read_text())
        data["evaluation"] = {p: {"splits": len(b["splits"]), "mean_rating": b["mean_rating"],
                                  "mean_ranking": b["mean_ranking"]} for p, b in report["protocols"].items()}
    return data


def examples(run_dir: Path, run: dict[str, Any]) -> dict[str, Any]:
    """A few rows of each table that has examples (``Table.examples``), by table and model: the
    lists of the first users, and of the items most users have seen."""
    from .bundle import load_bundle
    from .tables import USERS
    tables = _tables(run)
    bundle = load_bundle(Path(run["bundle"]["path"]), run["models"])
    popular = np.argsort(-np.bincount(bundle.seen_items, minlength=bundle.n_items), kind="stable")[:EXAMPLE_USERS]
    keys = {USERS: bundle.user_ids[:EXAMPLE_USERS].tolist()}
    out: dict[str, Any] = {}
    titles = dict(zip(bundle.item_ids.tolist(), bundle.item_titles))

    def label(unit: str, key: str) -> str:
        if unit == USERS:
            return f"user {key}"
        raw = next((i for i in titles if str(i) == key), key)
        return f"item {key}: {titles.get(raw) or ''}".rstrip(": ")

    for table in tables:
        chosen_keys = keys.get(table.unit, bundle.item_ids[popular].tolist())
        shown = {m: {label(table.unit, k): rows for k, rows in table.examples(run_dir, bundle, m, chosen_keys).items()}
                 for m in run["models"]}
        if any(shown.values()):
            out[table.name] = shown
    return out


def _tables(run: dict[str, Any]) -> tuple[Any, ...]:
    from .tables import chosen
    return chosen(tuple(run["tables"]))


def _plain(value: Any) -> int | str:
    """An id as JSON holds it: numpy integers become ints, text stays text."""
    return value.item() if hasattr(value, "item") else value


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def figures(data: dict[str, Any]) -> dict[str, str]:
    """Base64 PNGs by name; empty when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    out = {}
    models = data["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3), squeeze=False)
    for ax, (name, m) in zip(axes[0], models.items()):
        epochs = [e["epoch"] for e in m["learning_curve"]]
        ax.plot(epochs, [e["train_rmse"] for e in m["learning_curve"]], label="train")
        ax.plot(epochs, [e["validation_rmse"] for e in m["learning_curve"]], label="validation")
        ax.axvline(m["best_epoch"], color="grey", linestyle=":")
        ax.set(title=name, xlabel="epoch", ylabel="RMSE on [0, 1]")
        ax.legend()
    out["learning_curves"] = _png(fig)
    with_hist = {n: m for n, m in models.items() if m.get("histogram")}
    if with_hist:
        fig, axes = plt.subplots(1, len(with_hist), figsize=(4 * len(with_hist), 3), squeeze=False)
        for ax, (name, m) in zip(axes[0], with_hist.items()):
            edges = np.asarray(m["histogram"]["bins"])
            centres = (edges[1:] + edges[:-1]) / 2
            for truth, counts in zip(m["histogram"]["truth"], m["histogram"]["counts"]):
                ax.plot(centres, counts, label=f"true {truth:g}")
            ax.set(title=name, xlabel="predicted rating", ylabel="test ratings")
            ax.legend(fontsize=7)
        out["predicted_vs_true"] = _png(fig)
    if data["evaluation"]:
        protocol = "temporal" if "temporal" in data["evaluation"] else next(iter(data["evaluation"]))
        ranking = data["evaluation"][protocol]["mean_ranking"]
        fig, ax = plt.subplots(figsize=(7, 3))
        names = list(ranking)
        kind = _relevance(ranking)
        ax.bar(names, [ranking[n][kind]["ndcg"] for n in names])
        ax.set(title=f"NDCG@10, {protocol} hold-out (relevant: {kind.replace('_', ' ')})", ylabel="NDCG@10")
        out["ranking"] = _png(fig)
    return out


def _relevance(ranking: dict[str, Any]) -> str:
    """The relevance an evaluation's top-N figures are shown for: rated 4 and up where it has
    ratings, else (implicit feedback) any held-out interaction."""
    kinds = next(iter(ranking.values()))
    return "rated_4_plus" if "rated_4_plus" in kinds else "any_held_out"


def _test_section(data: dict[str, Any]) -> list[str]:
    """The bundle's test figures: rating errors, or for implicit feedback top-N quality."""
    if data["feedback"] == IMPLICIT:
        rows = [[n, *(m["test_metrics"].get(k) for k in ("ndcg_at_10", "recall_at_20", "map_at_10", "users"))]
                for n, m in data["models"].items()]
        return ["<h2>Test-set top-N quality (bundle's hold-out)</h2>",
                "<p>Implicit feedback: every held-out interaction is relevant; each user's training items are left "
                "out of the lists.</p>", _table(["model", "NDCG@10", "recall@20", "MAP@10", "users"], rows)]
    baseline = data["baseline_global_mean"]
    rows = [["global mean", baseline["rmse_stars"], baseline["mae_stars"], baseline["rmse_unit"], "-"]]
    rows += [[n, m["test_metrics"]["rmse_stars"], m["test_metrics"]["mae_stars"], m["test_metrics"]["rmse_unit"],
              "-" if m.get("untuned_reference_rmse_unit") is None else m["untuned_reference_rmse_unit"]]
             for n, m in data["models"].items()]
    scale = data["rating_scale"]
    return ["<h2>Test-set rating error (bundle's hold-out)</h2>",
            f"<p>Ratings from {scale['low']:g} to {scale['high']:g}.</p>",
            _table(["model", "RMSE", "MAE", "RMSE [0, 1]", "untuned reference RMSE [0, 1] (introductory article)"],
                   rows)]


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(c) if not isinstance(c, str) else c)}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _gate_section(gate: dict[str, Any] | None) -> list[str]:
    """The model gate's comparison of this bundle with the one it replaced."""
    if not gate:
        return []
    if gate["previous_bundle"] is None:
        return ["<h2>Model gate</h2><p>The first bundle: nothing to compare with; passed.</p>"]
    verdict = "passed" if gate["passed"] else "refused, published with --accept-worse"
    rows = [[m, f.get("rmse"), f.get("previous_rmse"), f.get("ndcg_at_10"), f.get("previous_ndcg_at_10"),
             f.get("recall_at_20"), f.get("previous_recall_at_20"), f.get("pairs"), f.get("users"),
             ("yes" if f["passed"] else "WORSE") if f.get("compared") else f.get("why", "-")]
            for m, f in gate["models"].items()]
    return [f"<h2>Model gate against bundle {html.escape(gate['previous_bundle'])}: {verdict}</h2>",
            f"<p>On this bundle's held-out ratings; allowed regression {gate['max_regression']:.1%}.</p>",
            _table(["model", "RMSE", "previous RMSE", "NDCG@10", "previous NDCG@10", "recall@20",
                    "previous recall@20", "pairs", "users", "passed"], rows)]


def _data_section(checks: dict[str, Any] | None) -> list[str]:
    """The bundle's training data against the data of the bundle it replaced."""
    if not checks:
        return []
    def shown(profile: dict[str, Any], key: str) -> str:
        if key not in profile:
            return "-"
        return " to ".join(map(fmt, profile[key])) if key == "rating_scale" else fmt(profile[key])

    profile, before = checks["profile"], checks.get("previous_profile") or {}
    rows = [[key.replace("_", " "), shown(profile, key), shown(before, key)]
            for key in ("ratings", "users", "items", "user_ids", "item_ids", "rating_scale", "feedback")]
    if checks["compared_with"] is None:
        verdict = "the first bundle: nothing to compare with"
    elif checks["passed"]:
        verdict = (f"within the limits (largest shrink allowed {fmt(checks['max_shrink'])}) against bundle "
                   f"{checks['compared_with']}")
    else:
        verdict = f"changed, accepted with --accept-data-change: {'; '.join(checks['problems'])}"
    return ["<h2>Training data checks</h2>", f"<p>{html.escape(verdict)}.</p>",
            _table(["", "this bundle", "previous bundle"], rows)]


def _drift_section(drift: dict[str, Any] | None) -> list[str]:
    """How this run's tables differ from the previous run's."""
    if not drift or drift.get("previous_run") is None:
        return ["<h2>Against the previous run</h2><p>The first run on this output root.</p>"] if drift else []
    rows = [[m, f.get("comparable_share"), f.get("topn_changed_share"), f.get("prediction_mean_abs_change"),
             f.get("prediction_max_abs_change"), f.get("similar_changed_share"), f.get("coverage"),
             f.get("previous_coverage"), f.get("why", "")]
            for m, f in drift["models"].items()]
    return [f"<h2>Against the previous run {html.escape(drift['previous_run'])}</h2>",
            _table(["model", "share of the run comparable", "users whose top-N changed", "mean |prediction change|",
                    "largest |prediction change|", "items whose similar items changed", "catalogue coverage",
                    "previous coverage", "not comparable"], rows)]


def render(data: dict[str, Any], images: dict[str, str]) -> str:
    """The page's HTML."""
    parts = [f"<h1>Run {html.escape(data['run_id'])}</h1>",
             f"<p>Model bundle {html.escape(data['bundle_id'])}, trained on {data['feedback']} feedback; top "
             f"{data['top_n']} per user.</p>", *_test_section(data)]
    for table, per_model in (data.get("table_figures") or {}).items():
        names = sorted({k for figures in per_model.values() for k in figures})
        parts.append(f"<h2>Figures of the {html.escape(table)} table</h2>"
                     + _table(["model", *(n.replace("_", " ") for n in names)],
                              [[m, *(f.get(n) for n in names)] for m, f in per_model.items()]))
    parts += _data_section(data.get("data_checks")) + _gate_section(data.get("gate")) + _drift_section(data.get("drift"))
    if not images:
        parts.append("<p><em>Plots are left out: matplotlib is not installed (pip install '.[report]').</em></p>")
    titles = {"learning_curves": "Learning curves", "predicted_vs_true": "Predicted vs true ratings",
              "ranking": "Ranking quality against baselines"}
    for name, image in images.items():
        parts.append(f"<h2>{titles[name]}</h2><img id='fig-{name}' alt='{titles[name]}' src='data:image/png;base64,{image}'>")
    if data["evaluation"]:
        for protocol, body in data["evaluation"].items():
            parts.append(f"<h2>{protocol.replace('_', ' ')}: mean over {body['splits']} split(s)</h2>")
            if body["mean_rating"]:
                parts.append(_table(["method", "RMSE", "MAE", "RMSE [0, 1]"],
                                    [[k, v["rmse_stars"], v["mae_stars"], v["rmse_unit"]]
                                     for k, v in body["mean_rating"].items()]))
            kind = _relevance(body["mean_ranking"])
            parts.append(_table([f"method (top-10, relevant: {kind.replace('_', ' ')})", "precision", "recall", "NDCG",
                                 "MAP", "hit rate", "coverage", "mean popularity"],
                                [[k, *(v[kind][c] for c in ("precision", "recall", "ndcg", "map", "hit_rate",
                                                                       "coverage", "mean_popularity"))]
                                 for k, v in body["mean_ranking"].items()]))
    else:
        parts.append("<p><em>No cross-validation results yet: run <code>make evaluate</code>.</em></p>")
    for table, per_model in data["examples"].items():
        for model, lists in per_model.items():
            title = data.get("example_titles", {}).get(table, "{model}").format(model=model)
            parts.append(f"<h2>{html.escape(title)}</h2>")
            for key, rows in lists.items():
                value = next((k for k in rows[0] if k not in ("rank", "item_id", "title")), "") if rows else ""
                parts.append(f"<h3>{html.escape(str(key))}</h3>" + _table(
                    ["rank", "item_id", "title", value.replace("_", " ")],
                    [[r["rank"], _plain(r["item_id"]), r["title"], r.get(value)] for r in rows]))
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Run {html.escape(data['run_id'])}</title>" \
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"


def write_report(run_dir: Path, evaluation: Path | None = DEFAULT_EVALUATION) -> Path:
    """Write ``report.json`` and ``report.html`` into ``run_dir`` (each by an atomic rename)."""
    data = gather(run_dir, evaluation)
    page = render(data, figures(data))
    for name, text in ((REPORT_JSON, strict_json.dumps(data, indent=1, sort_keys=True)), (REPORT_HTML, page)):
        tmp = run_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(run_dir / name)
    return run_dir / REPORT_HTML


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scoring.report", description=__doc__)
    parser.add_argument("--run", type=Path, default=DEFAULT_OUTPUT_ROOT / LATEST,
                        help="published run directory (default: %(default)s)")
    parser.add_argument("--evaluation", type=Path, default=DEFAULT_EVALUATION,
                        help="results of make evaluate, if any (default: %(default)s)")
    args = parser.parse_args(argv)
    return run_cli(lambda: print(write_report(args.run.resolve(), args.evaluation)))


if __name__ == "__main__":
    sys.exit(main())
