"""The demo's `report.json` and `report.html`: offline evaluation, drift, the canary online, the
decision and what it is worth, in one file.

Plot functions take a Matplotlib `Axes` (or `Figure`) and plain report data, so notebook 02 draws
the same figures inline. `report_html` embeds them as PNGs (no external files) in the Jinja2 template
`templates/demo_report.html.j2` (autoescape on).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from fraud.protocol import FRAUD_PROBABILITY

#: Business-impact assumption (stated in the report; `fraud-rollout demo --review-cost` changes it).
DEFAULT_REVIEW_COST = 5.0
VERSION_COLOURS = {"v1": "#1f77b4", "v2": "#ff7f0e", "error": "#d62728", "unknown": "#7f7f7f"}


def colour(version: str) -> str:
    return VERSION_COLOURS.get(version, "#2ca02c")


@dataclass(frozen=True)
class ImpactAssumptions:
    review_cost: float = DEFAULT_REVIEW_COST  # per flagged transaction (a manual review)
    recovered_share: float = 1.0  # of a flagged fraud's amount that is saved

    def statements(self) -> list[str]:
        return [
            f"Every flagged transaction is reviewed by hand at {self.review_cost:g} per review (an assumption; "
            "`--review-cost`).",
            f"A flagged fraud is stopped: {self.recovered_share:.0%} of its Amount is saved. A missed fraud's "
            "Amount is lost in full.",
            "Amounts are the holdout's own `Amount` column (the Kaggle schema's currency units); legitimate "
            "transactions wrongly flagged cost only their review (no lost sales or churn counted).",
            "The holdout spans three months; figures are per holdout, not annualised.",
        ]


def impact_of(labels: np.ndarray, amount: np.ndarray, flagged: np.ndarray, a: ImpactAssumptions) -> dict:
    fraud = labels.astype(bool)
    flagged = flagged.astype(bool)
    caught = float(amount[fraud & flagged].sum())
    missed = float(amount[fraud & ~flagged].sum())
    reviews = int(flagged.sum())
    review_cost = reviews * a.review_cost
    saved = a.recovered_share * caught
    return {"transactions": int(len(labels)), "frauds": int(fraud.sum()),
            "frauds_caught": int((fraud & flagged).sum()), "false_alarms": int((~fraud & flagged).sum()),
            "fraud_amount_caught": round(caught, 2), "fraud_amount_missed": round(missed, 2),
            "mean_fraud_amount": round(float(amount[fraud].mean()), 2) if fraud.any() else None,
            "reviews": reviews, "review_cost": round(review_cost, 2), "loss_prevented": round(saved, 2),
            "net_benefit": round(saved - review_cost, 2)}


def business_impact(labels: np.ndarray, amount: np.ndarray, offline_flags: dict[str, np.ndarray],
                    online_flags: np.ndarray | None = None,
                    assumptions: ImpactAssumptions = ImpactAssumptions()) -> dict:
    """Net benefit on the holdout if each version served all of it (its offline decisions), and as
    the canary actually served it during the replay (online decisions; failed rows unflagged)."""
    out = {"assumptions": assumptions.statements(), "review_cost": assumptions.review_cost,
           "recovered_share": assumptions.recovered_share,
           "if_serving_all": {v: impact_of(labels, amount, flags, assumptions) for v, flags in offline_flags.items()}}
    if online_flags is not None:
        out["as_replayed"] = impact_of(labels, amount, online_flags, assumptions)
    versions = sorted(out["if_serving_all"])
    if len(versions) == 2:
        a, b = (out["if_serving_all"][v] for v in versions)
        out["difference"] = {"versions": f"{versions[1]} − {versions[0]}",
                             "net_benefit": round(b["net_benefit"] - a["net_benefit"], 2),
                             "fraud_amount_caught": round(b["fraud_amount_caught"] - a["fraud_amount_caught"], 2),
                             "false_alarms": b["false_alarms"] - a["false_alarms"],
                             "frauds_caught": b["frauds_caught"] - a["frauds_caught"]}
    return out


def online_vs_offline(pipeline: dict, replay: dict, analysis: dict, confidence: float = 0.95) -> list[dict]:
    """Per version and metric: offline value with its Wilson CI (holdout counts), online value with
    its Wilson CI (replay counts), and the acceptance interval the analysis used (offline value,
    sized by the online count; see fraud_canary.agreement.agreement_with_offline)."""
    roles = {analysis["baseline_version"]: "baseline", analysis["canary_version"]: "canary"}
    from fraud_canary.proportions import wilson_interval

    rows = []
    for name, model in pipeline["models"].items():
        version = str(model.get("version", name))
        h = model["holdout"]
        online = replay["versions"].get(version)
        for metric, (hs, hn), online_counts in (
                ("recall", (h["tp"], h["tp"] + h["fn"]), online and (online["tp"], (online["tp"] or 0) + (online["fn"] or 0))),
                ("precision", (h["tp"], h["tp"] + h["fp"]), online and (online["tp"], (online["tp"] or 0) + (online["fp"] or 0))),
                ("flag_rate", (h["tp"] + h["fp"], h["tp"] + h["fp"] + h["tn"] + h["fn"]),
                 online and (online["flagged"], online["answered"]))):
            off_ci = wilson_interval(hs, hn, confidence)
            row = {"version": version, "metric": metric, "offline": hs / hn if hn else None,
                   "offline_low": off_ci.low, "offline_high": off_ci.high, "online": None, "online_low": None,
                   "online_high": None, "acceptance_low": None, "acceptance_high": None, "within": None}
            if online_counts and online_counts[0] is not None and online_counts[1]:
                s, n = online_counts
                ci = wilson_interval(int(s), int(n), confidence)
                row.update(online=s / n, online_low=ci.low, online_high=ci.high, online_n=int(n))
            comparison = analysis.get("comparisons", {}).get(f"{roles.get(version, '?')}.{metric}_vs_offline")
            if comparison:
                row.update(acceptance_low=comparison["low"], acceptance_high=comparison["high"],
                           within=bool(comparison["agrees"]))
            rows.append(row)
    return rows


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> str:
    """An <img> with the figure inlined; closes the figure."""
    from fraud.report import inline_png

    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return inline_png(buffer.getvalue())


def plot_confusions(axes, matrices: dict[str, dict]) -> None:
    """One 2×2 matrix per entry ({title: {tp, fp, tn, fn}}), rows = truth, columns = decision."""
    for ax, (title, m) in zip(np.ravel(axes), matrices.items()):
        grid = np.array([[m["tn"] or 0, m["fp"] or 0], [m["fn"] or 0, m["tp"] or 0]], dtype=float)
        ax.imshow(np.log1p(grid), cmap="Blues")
        for (i, j), value in np.ndenumerate(grid):
            ax.text(j, i, f"{int(value):,}", ha="center", va="center",
                    color="white" if np.log1p(value) > np.log1p(grid).max() * 0.6 else "black")
        ax.set(xticks=[0, 1], xticklabels=["legit", "fraud"], yticks=[0, 1], yticklabels=["legit", "fraud"],
               xlabel="decision", ylabel="truth", title=title)


def drift_features(profile: list[dict], drift_start: int, count: int = 4) -> list[str]:
    """The V features whose fraud mean moved most between before the drift and the last months."""
    before = [m for m in profile if m["month"] < drift_start and "fraud_mean" in m]
    after = [m for m in profile if m["month"] >= drift_start and "fraud_mean" in m]
    if not before or not after:
        return []
    names = [f for f in before[0]["fraud_mean"] if f.startswith("V")]
    moved = {f: abs(np.mean([m["fraud_mean"][f] for m in after]) - np.mean([m["fraud_mean"][f] for m in before]))
             for f in names}
    return sorted(moved, key=moved.get, reverse=True)[:count]


def plot_drift(fig, summary: dict) -> None:
    """Fraud rate and the most drifting features' monthly means (fraud and legitimate), with the
    drift start and the windows marked."""
    profile = summary["monthly_profile"]
    drift_start = summary["drift"]["start_month"]
    features = [*drift_features(profile, drift_start), "Amount"]
    months = [m["month"] for m in profile]
    axes = fig.subplots(2, 3).ravel()
    rate = [m["fraud_rows"] / max(1, m["fraud_rows"] + m["legit_rows"]) for m in profile]
    panels = [("fraud rate", None)] + [(f, f) for f in features]
    for ax, (title, feature) in zip(axes, panels):
        if feature is None:
            ax.plot(months, rate, marker="o", color="black")
        else:
            for kind, style in (("fraud", "-"), ("legit", "--")):
                values = [m.get(f"{kind}_mean", {}).get(feature, math.nan) for m in profile]
                ax.plot(months, values, style, marker=".", label=kind, color="#d62728" if kind == "fraud" else "#555")
        ax.axvline(drift_start - 0.5, color="purple", linewidth=1)
        for name, window in summary["windows"].items():
            if name == "holdout":
                ax.axvspan(window["months"][0] - 0.5, window["months"][1] + 0.5, color="#ddd", zorder=0)
        ax.set(title=f"{title} by month", xlabel="month")
    axes[1].legend(fontsize=8)
    axes[0].text(drift_start - 0.4, max(rate), "drift starts", color="purple", fontsize=8, va="top")


def plot_traffic(ax, timeline: list[dict], target_percent: float | None = None) -> None:
    """Share of replayed rows per version over the replay (stacked), failed rows in red."""
    if not timeline:
        ax.set_title("no replay")
        return
    versions = sorted({v for point in timeline for v in point["rows"]}, key=lambda v: (v == "error", v))
    t = [p["start_s"] for p in timeline]
    totals = np.array([sum(p["rows"].values()) for p in timeline], dtype=float)
    shares = [100 * np.array([p["rows"].get(v, 0) for p in timeline]) / np.maximum(totals, 1) for v in versions]
    ax.stackplot(t, *shares, labels=versions, colors=[colour(v) for v in versions], alpha=0.8, step="post")
    if target_percent is not None:
        ax.axhline(100 - target_percent, color="black", linestyle=":", label=f"target split {100 - target_percent:g}/{target_percent:g}")
    ax.set(xlabel="seconds into the replay", ylabel="% of rows", ylim=(0, 100), title="Traffic split during the replay")
    ax.legend(loc="lower right", fontsize=8)


def plot_online_offline(ax, rows: list[dict]) -> None:
    """Offline (holdout) and online (replay) values with 95 % intervals, per version and metric."""
    shown = [r for r in rows if r["metric"] in ("recall", "precision")]
    for i, r in enumerate(shown):
        c = colour(r["version"])
        if r["offline"] is not None:
            ax.errorbar(i - 0.12, r["offline"], yerr=[[r["offline"] - r["offline_low"]], [r["offline_high"] - r["offline"]]],
                        fmt="s", color=c, capsize=3, label="offline (holdout CI)" if i == 0 else None)
        if r["online"] is not None:
            ax.errorbar(i + 0.12, r["online"], yerr=[[r["online"] - r["online_low"]], [r["online_high"] - r["online"]]],
                        fmt="o", color=c, mfc="white", capsize=3, label="online (replay CI)" if i == 0 else None)
        if r["acceptance_low"] is not None:
            ax.add_patch(_rect(i, r["acceptance_low"], r["acceptance_high"]))
    ax.set_xticks(range(len(shown)), [f"{r['version']}\n{r['metric']}" for r in shown])
    ax.set(ylim=(0, 1.05), title="Online vs offline (95 %); grey: acceptance interval")
    ax.legend(loc="lower left", fontsize=8)


def _rect(x: float, low: float, high: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.3, low), 0.6, high - low, color="#ccc", alpha=0.5, zorder=0)


def plot_scores(ax, rows: pd.DataFrame) -> None:
    """Online fraud_probability per version, frauds and legitimate apart."""
    for version in sorted(rows.loc[~rows["error"], "model_version"].unique()):
        mine = rows[(rows["model_version"] == version) & ~rows["error"]]
        for label, style in ((1, "-"), (0, ":")):
            values = mine.loc[mine["label"] == label, "probability"].to_numpy()
            if values.size:
                ax.hist(values, bins=40, range=(0, 1), histtype="step", linestyle=style, density=True,
                        color=colour(version), label=f"{version} {'fraud' if label else 'legit'}")
    ax.set(yscale="log", xlabel=FRAUD_PROBABILITY, title="Online scores by version")
    ax.legend(fontsize=8)


def _f(x: object, spec: str = ".4f") -> str:
    """A number in `spec`, "n/a" for None and non-finite floats; anything else as text (the template escapes it)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return format(x, spec) if isinstance(x, (int, float)) else str(x)


CSS = ("body{font-family:sans-serif;margin:1.5em;max-width:1200px}table{border-collapse:collapse;margin:.6em 0}"
       "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
       ".box{border:2px solid #444;padding:.6em 1em;margin:1em 0}.fail{color:#b00;font-weight:bold}"
       ".pass{color:#070}.insufficient{color:#a60}code{background:#f4f4f4}")
CHECK_ORDER = {"fail": 0, "insufficient": 1, "pass": 2}


def figures(report: dict, summary: dict | None, rows: pd.DataFrame | None) -> dict[str, str | None]:
    """The report's plots as inlined <img> markup; None where there is nothing to draw."""
    from fraud.report import pr_curve_plot

    plt = _pyplot()
    models, replay = report["pipeline"]["models"], report["replay"]
    out: dict[str, str | None] = {"drift": None, "scores": None, "pr_curve": pr_curve_plot(models)}
    if summary and summary.get("monthly_profile"):
        fig = plt.figure(figsize=(12, 6))
        plot_drift(fig, summary)
        out["drift"] = png(fig)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
    matrices = {f"{v} offline (holdout)": models[v]["holdout"] for v in models}
    for version, m in replay["versions"].items():
        if m.get("tp") is not None and version in models:
            matrices[f"{version} online (replay)"] = m
    plot_confusions(axes, matrices)
    for ax in np.ravel(axes)[len(matrices):]:
        ax.axis("off")
    out["confusions"] = png(fig)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    plot_traffic(axes[0], replay.get("timeline", []), report["analysis"]["policy"]["target_canary_percent"])
    plot_online_offline(axes[1], report["online_vs_offline"])
    out["traffic_online_offline"] = png(fig)
    if rows is not None and len(rows):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        plot_scores(ax, rows)
        out["scores"] = png(fig)
    return out


def report_html(report: dict, summary: dict | None, rows: pd.DataFrame | None) -> str:
    """The demo's report.html (template `templates/demo_report.html.j2`): headline, data and drift,
    offline evaluation, the canary online, the recommendation, business impact, what to explore."""
    from fraud.report import metrics_table, render

    impact = report["business_impact"]
    scenarios = [(f"{v} serving all of the holdout", i) for v, i in impact["if_serving_all"].items()]
    if "as_replayed" in impact:
        scenarios.append(("as replayed (the canary split)", impact["as_replayed"]))
    checks = sorted(report["analysis"]["checks"], key=lambda c: CHECK_ORDER[c["status"]])
    return render("fraud_ops", "demo_report.html.j2", {
        "report": report, "css": CSS, "figures": figures(report, summary, rows), "checks": checks,
        "metrics_table": metrics_table(report["pipeline"]["models"]), "scenarios": scenarios}, filters={"f": _f})
