"""`fraud-rollout bench coverage`: the coverage of the interval the label-free promotion rule uses,
on real model scores (issue 17).

Parses and prints; the study is `fraud_control.rollout.label_free_coverage`. A pipeline run's holdout is
scored once by its baseline (models.v1 of the report) and its candidate (models.v2); per shadow
share, bootstrap rollouts of rows × shadow × windows shadow pairs are judged by the rule's lower
bounds (paired CBPE of Δ recall under each version's calibration) and compared with the true Δ on
the same rows. Then the roles swapped: the baseline as the canary, judged partly by its own
calibration on a holdout it was not trained for, where CBPE is known to fail; the rule must refuse.

Models without a pipeline report: `--baseline DIR --candidate DIR --holdout FILE` (exported
artifact roots, a labelled .parquet/.csv).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fraud_canary.paired_scores import DRAWS
from fraud_canary.simulation import DEMO_WINDOW_ROWS
from fraud_control.rollout.label_free_coverage import (
    RULE,
    Coverage,
    PairedHoldout,
    ScoredHoldout,
    artifact_versions,
    measure_coverage,
    pairs_per_rollout,
    score_holdout,
)
from fraud_ops import local_defaults
from fraud_ops.replay_source import read_holdout, read_pipeline_report
from scipy import stats

from fraud_rollout.args import UsageError, non_negative_int, positive_int
from fraud_rollout.bench_rollout import shadow_share

#: Shadow shares studied by default: below, at and above the transformer's 10 %, and every row.
SHADOW_SHARES = (0.05, 0.10, 0.25, 1.0)
#: Windows with shadow pairs in a rollout that promotes at its first look of each step (5, 20, 50 %).
WINDOWS = 3


def pair_share(text: str) -> float:
    """argparse type: a shadow share above 0 (0..1), since a rollout without shadow pairs has nothing to judge."""
    value = shadow_share(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} gives no shadow pairs: need a share above 0")
    return value


def register(commands, bench) -> None:
    """`bench coverage` (a benchmark only: `commands` is the shared signature's)."""
    parser = bench.add_parser("coverage", help="coverage of the label-free promotion rule's interval, on real scores")
    parser.add_argument("--report", type=Path,
                        help=f"pipeline report.json: its holdout, models.v1 as the baseline and models.v2 as the "
                             f"candidate (default {local_defaults.RUN_REPORT}, else the demo's, unless the three options below are given)")
    parser.add_argument("--baseline", type=Path, help="exported baseline model root (with --candidate, --holdout)")
    parser.add_argument("--candidate", type=Path, help="exported candidate model root")
    parser.add_argument("--holdout", type=Path, help="labelled transactions (.parquet or .csv with Class)")
    parser.add_argument("--draws", type=positive_int, default=1000, help="bootstrap rollouts per row")
    parser.add_argument("--rows", type=positive_int, default=DEMO_WINDOW_ROWS, help="transactions per window")
    parser.add_argument("--windows", type=positive_int, default=WINDOWS, help="windows of shadow pairs per rollout")
    parser.add_argument("--shadow", type=pair_share, action="append",
                        help=f"shadow share (repeat for several; default {', '.join(map(str, SHADOW_SHARES))})")
    parser.add_argument("--mc-draws", type=positive_int, default=DRAWS,
                        help="Monte Carlo draws of each lower bound (default: the rule's)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the bootstrap")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.set_defaults(func=bench_coverage_command)


def _scored(args: argparse.Namespace) -> tuple[ScoredHoldout, str, str, str]:
    """The holdout scored by both models, the baseline's and the candidate's version, and where they came from."""
    direct = (args.baseline, args.candidate, args.holdout)
    if any(direct):
        if not all(direct) or args.report:
            raise UsageError("--baseline, --candidate and --holdout go together, instead of --report")
        baseline, candidate = artifact_versions(args.baseline, args.candidate)
        artifacts = {baseline: args.baseline, candidate: args.candidate}
        frame, source = read_holdout(args.holdout), f"{args.holdout}"
    else:
        path = args.report or local_defaults.pipeline_report()
        report = read_pipeline_report(path)
        models = report["models"]
        if not {"v1", "v2"} <= set(models):
            raise UsageError(f"--report {path}: needs models.v1 (baseline) and models.v2 (candidate)")
        baseline, candidate = (str(models[role].get("version", role)) for role in ("v1", "v2"))
        artifacts = {baseline: models["v1"]["artifact"], candidate: models["v2"]["artifact"]}
        holdout = report.get("artifacts", {}).get("holdout")
        if not holdout:
            raise UsageError(f"--report {path}: names no holdout (artifacts.holdout); pass --holdout")
        frame, source = read_holdout(Path(holdout), option=f"artifacts.holdout of {path}"), f"{path}"
    return score_holdout(frame, artifacts), baseline, candidate, source


def _share(c: Coverage) -> str:
    low = stats.beta.ppf(0.025, c.promoted, c.draws - c.promoted + 1) if c.promoted else 0.0
    high = stats.beta.ppf(0.975, c.promoted + 1, c.draws - c.promoted) if c.promoted < c.draws else 1.0
    return f"{c.promote_share:.3f} [{low:.3f}, {high:.3f}]"


def format_table(rows: list[tuple[float, Coverage]], holdout: ScoredHoldout, source: str, args) -> str:
    head = (f"{'canary over baseline':<21} {'shadow':>6} {'pairs':>8} {'true Δ':>7}   coverage: {'canary':>6} "
            f"{'baseline':>8} {'rule':>6} {'≥ nominal − 3 SE':>16}   median width: {'canary':>6} {'baseline':>8} "
            f"{'rule':>6}   promote share [95 %]")
    lines = [head, "-" * len(head)]
    for shadow, c in rows:
        floor = c.level - 3 * c.standard_error
        lines.append(
            f"{c.canary + ' over ' + c.baseline:<21} {shadow:>6g} {c.pairs:>8,} {c.median_true_delta:>+7.3f}   "
            f"{'':>9} {c.coverage(c.canary):>6.3f} {c.coverage(c.baseline):>8.3f} {c.coverage(RULE):>6.3f} "
            f"{'yes' if c.coverage(RULE) >= floor else 'NO':>16}   {'':>13} {c.median_width[c.canary]:>6.3f} "
            f"{c.median_width[c.baseline]:>8.3f} {c.median_width[RULE]:>6.3f}   {_share(c)}")
    first = rows[0][1]
    frauds = int(holdout.labels.sum())
    recalls = ", ".join(f"{v} {holdout.recall(v):.3f}" for v in holdout.scores)
    seconds = sum(c.seconds for _, c in rows)
    lines += ["",
              f"holdout {source}: {len(holdout.labels):,} rows, {frauds} frauds; recall {recalls}",
              f"pairs = {args.rows:,} rows × shadow × {args.windows} windows, bootstrap resampled from the holdout; "
              f"{first.draws} draws per row, {first.mc_draws} Monte Carlo draws per lower bound",
              f"rule: its lower bound (each version's calibration on the rows it alone flags) ≥ −{first.margin:g} "
              f"at level {first.level:.5g} (nominal); coverage = P(lower ≤ the holdout's true Δ), beside Δ under "
              f"each calibration throughout; Monte Carlo SE at nominal {first.standard_error:.4f} (over "
              f"{first.judged} draws with frauds)",
              "width = estimate − lower bound; promote share: draws where the rule would promote (Clopper-Pearson "
              "95 %)",
              f"{sum(c.draws for _, c in rows) / seconds:.0f} draws per second ({seconds:.1f} s)"]
    return "\n".join(lines)


def bench_coverage_command(args: argparse.Namespace) -> int:
    pairs = {shadow: pairs_per_rollout(args.rows, shadow, args.windows) for shadow in args.shadow or SHADOW_SHARES}
    holdout, baseline, candidate, source = _scored(args)
    rows = []
    for canary, base in ((candidate, baseline), (baseline, candidate)):
        paired = PairedHoldout(holdout, base, canary)
        rows += [(shadow, measure_coverage(paired, pairs=n, draws=args.draws, seed=args.seed, mc_draws=args.mc_draws))
                 for shadow, n in pairs.items()]
    if args.json:
        print(json.dumps({"source": source, "holdout_rows": len(holdout.labels),
                          "holdout_frauds": int(holdout.labels.sum()),
                          "recall": {v: holdout.recall(v) for v in holdout.scores},
                          "rows": [{"shadow": s, **c.to_dict()} for s, c in rows]}, indent=2))
    else:
        print(format_table(rows, holdout, source, args))
    return 0
