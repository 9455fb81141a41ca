"""`fraud-rollout bench rollout`: the rollout policy's operating characteristics, by simulation.

Parses and prints; the simulation is `fraud_canary.simulation` (whole rollouts through the real
`judge`, DESIGN decision 18). One row per scenario × regime: the shares of rollouts promoted,
rolled back and stopped inconclusive, each with its Monte Carlo 95 % interval (Clopper-Pearson),
the median windows to each outcome and the first rollback rule; then how many of 20 seeds promote
a good canary with labels.

`--report`: the live regime of `good` and `equal` with scored shadow pairs, so the label-free
promotion rule has what it reads: the report's holdout scored by models.v1 (baseline) and models.v2
(`good`'s canary), or by models.v1 as both (`equal`), resampled as each window's shadow pairs
(`fraud_control.rollout.label_free_coverage.scored_pairs`). Measured on a 1,000,000-transaction run's report
(2,000 rollouts per scenario, 10 rollouts per second: the label-free bound's Monte Carlo at the last
step): `good` promoted in every one (median 3 windows), `equal` in 0.9975 and inconclusive in the
rest, none rolled back. Without `--report` the live regime cannot promote.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from fraud_canary.progressive import INCONCLUSIVE, PROMOTE, ROLLBACK, RolloutPolicy
from fraud_canary.simulation import (
    BASELINE,
    CANARY,
    DEMO_WINDOW_ROWS,
    EQUAL,
    GOOD,
    LIVE,
    OUTCOMES,
    REGIMES,
    SCENARIOS,
    ScoredPairs,
    Summary,
    seeds_promoted,
    simulate,
)
from fraud_control.rollout.label_free_coverage import equal_canary, score_holdout, scored_pairs
from fraud_ops.replay_source import read_holdout, read_pipeline_report
from fraud_serving.shadow import DEFAULT_SHADOW_PERCENT

from fraud_rollout.args import UsageError, non_negative_int, number_within, positive_int

#: The scenarios a pipeline report's models can stand in for: its candidate over its baseline, its baseline over itself.
SCORED_SCENARIOS = (GOOD.name, EQUAL.name)


#: argparse type: a share of rows, 0..1.
shadow_share = number_within(0, 1, " (a share, not a percent)")


def register(commands, bench) -> None:
    """`bench rollout` (a benchmark only: `commands` is the shared signature's)."""
    parser = bench.add_parser("rollout", help="operating characteristics of the rollout policy, simulated")
    parser.add_argument("--rollouts", type=positive_int, default=2000, help="simulated rollouts per row")
    parser.add_argument("--rows", type=positive_int, default=DEMO_WINDOW_ROWS,
                        help="transactions per window (default: the demo's, a quarter of the holdout)")
    parser.add_argument("--shadow", type=shadow_share, default=DEFAULT_SHADOW_PERCENT / 100,
                        help="share of each version's rows also scored by the other (default: the transformer's)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                        help="only this scenario (repeat for several; default: all)")
    parser.add_argument("--seeds", type=non_negative_int, default=20,
                        help="seeded good-canary rollouts to count promotions over (0: skip)")
    parser.add_argument("--report", type=Path,
                        help="pipeline report.json: run the live regime of good and equal with shadow pairs scored by "
                             "its models on its holdout (models.v2 over models.v1, models.v1 over itself)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.set_defaults(func=bench_rollout_command)


def _scored_pairs(path: Path) -> dict[str, ScoredPairs]:
    """Per scenario, shadow-pair scores from a pipeline report's holdout scored once by both its models."""
    report = read_pipeline_report(path)
    models, holdout = report["models"], report.get("artifacts", {}).get("holdout")
    if not {"v1", "v2"} <= set(models) or not holdout:
        raise UsageError(f"--report {path}: needs models.v1, models.v2 and artifacts.holdout")
    frame = read_holdout(Path(holdout), option=f"artifacts.holdout of {path}")
    scored = score_holdout(frame, {BASELINE: models["v1"]["artifact"], CANARY: models["v2"]["artifact"]})
    return {GOOD.name: scored_pairs(scored), EQUAL.name: scored_pairs(equal_canary(scored, BASELINE, CANARY))}


def _cell(summary: Summary, outcome: str) -> str:
    # four decimals: at 20,000 rollouts one rollback (5e-5) is a visible upper bound of 0.0003, not 0.000
    low, high = summary.interval(outcome)
    return f"{summary.share(outcome):.4f} [{low:.4f}, {high:.4f}]"


def _windows(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:g}"


def format_table(summaries: list[Summary], promoted: int | None, seeds: int, policy: RolloutPolicy,
                 report: Path | None = None) -> str:
    head = (f"{'scenario':<18} {'regime':<9} {'promote':<25} {'rollback':<25} {'inconclusive':<25} "
            f"{'median windows: promote / rollback / inconclusive':<50} first rollback rules")
    lines = [head, "-" * len(head)]
    for s in summaries:
        rules = ", ".join(f"{rule} {n}" for rule, n in s.first_rules.items()) or "-"
        windows = " / ".join(_windows(s.median_windows[o]) for o in OUTCOMES)
        lines.append(f"{s.scenario:<18} {s.regime:<9} {_cell(s, PROMOTE):<25} {_cell(s, ROLLBACK):<25} "
                     f"{_cell(s, INCONCLUSIVE):<25} {windows:<50} {rules}")
    first = summaries[0]
    seconds = sum(s.seconds for s in summaries)
    lines += ["", f"{first.rollouts} rollouts per row, {first.rows} rows per window, shadow {first.shadow:g}; plan "
                  f"{'/'.join(map(str, policy.plan))}, max_holds {policy.max_holds}, alpha {policy.alpha}; shares with "
                  f"Monte Carlo 95 % intervals (Clopper-Pearson), median windows",
              f"{sum(s.rollouts for s in summaries) / seconds:.1f} rollouts per second ({seconds:.1f} s)"]
    if report is not None:
        lines.append(f"shadow pairs scored by the models of {report} on its holdout: good = models.v2 over "
                     "models.v1, equal = models.v1 over itself")
    if promoted is not None:
        lines.append(f"good canary, labelled, default policy: promoted in {promoted} of {seeds} seeds")
    return "\n".join(lines)


def bench_rollout_command(args: argparse.Namespace) -> int:
    policy = RolloutPolicy()
    if args.report and set(args.scenario or ()) - set(SCORED_SCENARIOS):
        raise UsageError(f"--report gives scored shadow pairs for {' and '.join(SCORED_SCENARIOS)} only")
    scored = _scored_pairs(args.report) if args.report else {}
    names = args.scenario or list(scored or SCENARIOS)
    summaries = [simulate(name, regime, policy, rollouts=args.rollouts, rows=args.rows, shadow=args.shadow,
                          seed=args.seed, scored=scored.get(name)) for name in names
                 for regime in ((LIVE,) if scored else REGIMES)]
    promoted = seeds_promoted(args.seeds, policy, rows=args.rows, shadow=args.shadow, seed=args.seed) \
        if args.seeds else None
    if args.json:
        print(json.dumps({"policy": policy.to_dict(), "outcomes": list(OUTCOMES),
                          "rows": [s.to_dict() for s in summaries],
                          "scored_pairs": None if args.report is None else str(args.report),
                          "seeds_promoted": None if promoted is None else {"promoted": promoted, "seeds": args.seeds}},
                         indent=2))
    else:
        print(format_table(summaries, promoted, args.seeds, policy, args.report))
    return 0
