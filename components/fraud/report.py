"""Human-readable reports: the evaluation as HTML (rendered by the Kubeflow UI) and a text summary.

HTML comes from Jinja2 templates (package data under `templates/`) with autoescape on: every value
is escaped unless it is `Markup`, which only our own inlined plots and rendered tables are.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping
from typing import Any

from fraud.evaluate import METRICS

SLICES = (("holdout", "holdout (after all training data)"), ("pre_drift", "pre-drift slice"))


def _fmt(value: object) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def render(package: str, template: str, context: Mapping[str, Any],
           filters: Mapping[str, Callable[..., str]] | None = None) -> str:
    """`template` from `package`'s templates/, rendered with autoescape on."""
    # Imported here: the serving image holds the core without Jinja2 (and without Matplotlib).
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader(package, "templates"), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update({"fmt": _fmt, **(filters or {})})
    return environment.get_template(template).render(context)


def inline_png(png: bytes) -> str:
    """An <img> carrying the PNG itself (a report is one file), as markup the templates keep."""
    from markupsafe import Markup

    return Markup('<img alt="plot" src="data:image/png;base64,{}"/>').format(base64.b64encode(png).decode())


def _figure_png(draw: Callable[[Any], None]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    draw(ax)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return inline_png(buffer.getvalue())


def pr_curve_plot(models: dict) -> str:
    def draw(ax: Any) -> None:
        for name, model in models.items():
            pr = model["curves"]["pr"]
            ax.plot(pr["recall"], pr["precision"], label=f"{name} (PR-AUC {_fmt(model['holdout']['pr_auc'])})")
            ax.scatter([model["holdout"]["recall"] or 0], [model["holdout"]["precision"] or 0], marker="o")
        ax.set(xlabel="recall", ylabel="precision", title="Holdout precision-recall", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="lower left")
    return _figure_png(draw)


def roc_curve_plot(models: dict) -> str:
    def draw(ax: Any) -> None:
        for name, model in models.items():
            roc = model["curves"]["roc"]
            ax.plot(roc["fpr"], roc["tpr"], label=f"{name} (ROC-AUC {_fmt(model['holdout']['roc_auc'])})")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Holdout ROC", xscale="log", ylim=(0, 1.02))
        ax.legend(loc="lower right")
    return _figure_png(draw)


def metrics_table(models: dict) -> str:
    """Every model's metrics on each slice, one row per (model, slice)."""
    from markupsafe import Markup

    return Markup(render("fraud", "metrics_table.html.j2", {"models": models, "slices": SLICES, "metrics": METRICS}))


def evaluation_html(evaluation: dict, gate: dict | None = None) -> str:
    """The evaluate step's HTML artifact: windows, metrics, McNemar, curves and (if given) the gate."""
    models = evaluation["models"]
    return render("fraud", "evaluation.html.j2", {
        "windows": evaluation["data"]["windows"], "metrics_table": metrics_table(models),
        "mcnemar": evaluation["mcnemar"], "recall_change": models["v1"].get("recall_change_pre_drift_to_holdout"),
        "pr_curve": pr_curve_plot(models), "roc_curve": roc_curve_plot(models), "gate": gate})


def text_summary(report: dict) -> str:
    """The console summary of a local pipeline run."""
    lines = ["", "fraud-rollout pipeline run", "=" * 26]
    for name, w in report["data"]["windows"].items():
        lines.append(f"  {name:<10} {w['start'][:10]} … {w['end'][:10]}  {w['rows']:>9,} rows  {w['fraud']:>5} fraud")
    lines.append("")
    lines.append(f"  {'model':<6}{'slice':<11}{'precision':>10}{'recall':>8}{'f1':>8}{'pr_auc':>8}{'threshold':>11}")
    for name, model in report["models"].items():
        for key, _ in SLICES:
            m = model[key]
            lines.append(f"  {name:<6}{key:<11}{_fmt(m['precision']):>10}{_fmt(m['recall']):>8}{_fmt(m['f1']):>8}"
                         f"{_fmt(m['pr_auc']):>8}{_fmt(model['threshold']):>11}")
    baseline, candidate = report["models"]["v1"], report["models"]["v2"]
    source = baseline.get("source", "trained")
    lines.append(f"\n  baseline (v1 row): {baseline['version']}, {'the deployed champion' if source == 'champion' else 'trained'}"
                 f" (registry version {baseline.get('registry_version') or 'n/a'}); candidate {candidate['version']}")
    lines.append(f"  McNemar p (candidate vs baseline on holdout): {report['mcnemar_p']:.3g}")
    lines.append(f"  Gate: {report['gate']['decision'].upper()}")
    for reason in report["gate"]["reasons"]:
        lines.append(f"    [{'pass' if reason['passed'] else 'FAIL'}] {reason['rule']}: {reason['detail']}")
    return "\n".join(lines)
