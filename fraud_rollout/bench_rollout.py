"""`fraud-rollout bench rollout`: the rollout policy's operating characteristics, by simulation.

Parses and prints; the simulation is `fraud_canary.simulation` (whole rollouts through the real
`judge`, DESIGN decision 18). One row per scenario × regime: the shares of rollouts promoted,
rolled back and stopped inconclusive, each with its Monte Carlo 95 % interval (Clopper-Pearson),
the median windows to each outcome and the first rollback rule; then how many of 20 seeds promote
a good canary with labels.
"""
from __future__ import annotations

import argparse
import json
import math

from fraud_canary.progressive import INCONCLUSIVE, PROMOTE, ROLLBACK, RolloutPolicy
from fraud_canary.simulation import DEMO_WINDOW_ROWS, OUTCOMES, REGIMES, SCENARIOS, Summary, seeds_promoted, simulate
from fraud_serving.shadow import DEFAULT_SHADOW_PERCENT

from fraud_rollout.args import non_negative_int, positive_int


def shadow_share(text: str) -> float:
    """argparse type: a share of rows, 0..1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (0..1)") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not within 0..1 (a share, not a percent)")
    return value


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
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.set_defaults(func=bench_rollout_command)


def _cell(summary: Summary, outcome: str) -> str:
    low, high = summary.interval(outcome)
    return f"{summary.share(outcome):.3f} [{low:.3f}, {high:.3f}]"


def _windows(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:g}"


def format_table(summaries: list[Summary], promoted: int | None, seeds: int, policy: RolloutPolicy) -> str:
    head = (f"{'scenario':<18} {'regime':<9} {'promote':<22} {'rollback':<22} {'inconclusive':<22} "
            f"{'median windows: promote / rollback / inconclusive':<50} first rollback rules")
    lines = [head, "-" * len(head)]
    for s in summaries:
        rules = ", ".join(f"{rule} {n}" for rule, n in s.first_rules.items()) or "-"
        windows = " / ".join(_windows(s.median_windows[o]) for o in OUTCOMES)
        lines.append(f"{s.scenario:<18} {s.regime:<9} {_cell(s, PROMOTE):<22} {_cell(s, ROLLBACK):<22} "
                     f"{_cell(s, INCONCLUSIVE):<22} {windows:<50} {rules}")
    first = summaries[0]
    seconds = sum(s.seconds for s in summaries)
    lines += ["", f"{first.rollouts} rollouts per row, {first.rows} rows per window, shadow {first.shadow:g}; plan "
                  f"{'/'.join(map(str, policy.plan))}, max_holds {policy.max_holds}, alpha {policy.alpha}; shares with "
                  f"Monte Carlo 95 % intervals (Clopper-Pearson), median windows",
              f"{sum(s.rollouts for s in summaries) / seconds:.0f} rollouts per second ({seconds:.1f} s)"]
    if promoted is not None:
        lines.append(f"good canary, labelled, default policy: promoted in {promoted} of {seeds} seeds")
    return "\n".join(lines)


def bench_rollout_command(args: argparse.Namespace) -> int:
    policy = RolloutPolicy()
    names = args.scenario or list(SCENARIOS)
    summaries = [simulate(name, regime, policy, rollouts=args.rollouts, rows=args.rows, shadow=args.shadow,
                          seed=args.seed) for name in names for regime in REGIMES]
    promoted = seeds_promoted(args.seeds, policy, rows=args.rows, shadow=args.shadow, seed=args.seed) \
        if args.seeds else None
    if args.json:
        print(json.dumps({"policy": policy.to_dict(), "outcomes": list(OUTCOMES),
                          "rows": [s.to_dict() for s in summaries],
                          "seeds_promoted": None if promoted is None else {"promoted": promoted, "seeds": args.seeds}},
                         indent=2))
    else:
        print(format_table(summaries, promoted, args.seeds, policy))
    return 0
