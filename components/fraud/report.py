"""Human-readable reports: the evaluation as HTML (rendered by the Kubeflow UI) and a text summary."""
from __future__ import annotations

import base64
import html
import io

from fraud.evaluate import METRICS

SLICES = (("holdout", "holdout (after all training data)"), ("pre_drift", "pre-drift slice"))


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _figure_png(draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    draw(ax)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"/>'


def pr_curve_plot(models: dict) -> str:
    def draw(ax):
        for name, model in models.items():
            pr = model["curves"]["pr"]
            ax.plot(pr["recall"], pr["precision"], label=f"{name} (PR-AUC {_fmt(model['holdout']['pr_auc'])})")
            ax.scatter([model["holdout"]["recall"] or 0], [model["holdout"]["precision"] or 0], marker="o")
        ax.set(xlabel="recall", ylabel="precision", title="Holdout precision-recall", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(loc="lower left")
    return _figure_png(draw)


def roc_curve_plot(models: dict) -> str:
    def draw(ax):
        for name, model in models.items():
            roc = model["curves"]["roc"]
            ax.plot(roc["fpr"], roc["tpr"], label=f"{name} (ROC-AUC {_fmt(model['holdout']['roc_auc'])})")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Holdout ROC", xscale="log", ylim=(0, 1.02))
        ax.legend(loc="lower right")
    return _figure_png(draw)


def metrics_table(models: dict) -> str:
    head = "".join(f"<th>{m}</th>" for m in METRICS)
    rows = []
    for name, model in models.items():
        for key, label in SLICES:
            cells = "".join(f"<td>{_fmt(model[key][m])}</td>" for m in METRICS)
            rows.append(f"<tr><td>{name}</td><td>{label}</td>{cells}</tr>")
    return f"<table><tr><th>model</th><th>slice</th>{head}</tr>{''.join(rows)}</table>"


def evaluation_html(evaluation: dict, gate: dict | None = None) -> str:
    models = evaluation["models"]
    windows = evaluation["data"]["windows"]
    window_rows = "".join(f"<tr><td>{n}</td><td>{w['start']}</td><td>{w['end']}</td><td>{w['rows']}</td><td>{w['fraud']}</td></tr>"
                          for n, w in windows.items())
    mcnemar = evaluation["mcnemar"]
    parts = [
        "<html><head><meta charset='utf-8'><title>fraud-rollout evaluation</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>",
        "<h1>Offline evaluation: baseline v1 vs candidate v2</h1>",
        "<h2>Windows</h2><table><tr><th>window</th><th>first</th><th>last</th><th>rows</th><th>fraud</th></tr>"
        f"{window_rows}</table>",
        "<h2>Metrics at each model's own threshold</h2>", metrics_table(models),
        f"<p>McNemar exact test on holdout correctness: only v1 right {mcnemar['a_only']}, only v2 right "
        f"{mcnemar['b_only']}, p = {mcnemar['p_value']:.3g}.</p>",
        f"<p>v1 recall change pre-drift → holdout: {_fmt(models['v1'].get('recall_change_pre_drift_to_holdout'))} (relative).</p>",
        pr_curve_plot(models), roc_curve_plot(models),
    ]
    if gate:
        rows = "".join(f"<tr><td>{html.escape(r['rule'])}</td><td>{'pass' if r['passed'] else '<b>FAIL</b>'}</td>"
                       f"<td>{html.escape(r['detail'])}</td></tr>" for r in gate["reasons"])
        parts.append(f"<h2>Gate: {gate['decision']}</h2><table>{rows}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


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
    lines.append(f"\n  McNemar p (v2 vs v1 on holdout): {report['mcnemar_p']:.3g}")
    lines.append(f"  Gate: {report['gate']['decision'].upper()}")
    for reason in report["gate"]["reasons"]:
        lines.append(f"    [{'pass' if reason['passed'] else 'FAIL'}] {reason['rule']}: {reason['detail']}")
    return "\n".join(lines)
