"""`fraud-rollout bench sink`: the prediction-log sink's `/metrics` with millions of stored rows.

Parses and prints; the measuring (and what it times) is `fraud_ops.bench_sink`.
"""
from __future__ import annotations

from pathlib import Path

from fraud_rollout.args import positive_int


def register(commands, bench) -> None:
    """`bench sink` (a benchmark only: `commands` is the shared signature's)."""
    parser = bench.add_parser("sink", help="the prediction-log sink's /metrics with millions of stored rows")
    parser.add_argument("--rows", type=positive_int, default=10_000_000, help="stored predictions (default 10,000,000)")
    parser.add_argument("--days", type=positive_int, default=30, help="they were served over this many days (default 30)")
    parser.add_argument("--report", type=Path,
                        help="pipeline report.json whose models and holdout are used (default: the pipeline run's, "
                             "else the demo's)")
    parser.add_argument("--busy-hours", type=positive_int, default=25,
                        help="the busy feedback window, in hours (default 25: about 350,000 rows at the default volume)")
    parser.add_argument("--dir", type=Path, help="where the store is written (default: a temporary directory)")
    parser.set_defaults(func=bench_command)


def bench_command(args) -> int:
    from fraud_ops.bench_sink import TARGET_S, measure
    from fraud_ops.local_defaults import pipeline_report

    m = measure(args.report or pipeline_report(), args.rows, args.days, args.busy_hours, args.dir,
                progress=lambda line: print(line, flush=True))
    in_window, filled, size_mb, before, indexed, after, scrape, series, waited, waited_series, bounded, \
        bounded_series, shown = (m[k] for k in ("in_window", "filled", "size_mb", "before", "indexed", "after",
                                                "scrape", "series", "waited", "waited_series", "bounded",
                                                "bounded_series", "shown"))
    in_busy = round(args.rows * args.busy_hours / (24 * args.days))
    print(f"\nbench sink: {args.rows:,} stored rows ({size_mb:,.0f} MB, filled in {filled:.0f} s), about "
          f"{in_window:,} in the feedback window (1 h)")
    print(f"  {'feedback signals, no window index (before)':<46}{before:>8.2f} s")
    print(f"  {'feedback signals, with the index (after)':<46}{after:>8.2f} s   (building the index: {indexed:.0f} s, once)")
    print(f"  {'the real sink, first /metrics after start':<46}{scrape:>8.2f} s   target < {TARGET_S:.0f} s: "
          f"{'MET' if scrape < TARGET_S else 'MISSED'} ({series} fraud_feedback_* samples)")
    print(f"  a busy window ({args.busy_hours} h, about {in_busy:,} rows), the real sink's first /metrics:")
    print(f"  {'  waiting for the signals (--scrape-wait inf)':<46}{waited:>8.2f} s   ({waited_series} samples)")
    print(f"  {'  waiting at most 0.5 s (the default)':<46}{bounded:>8.2f} s   target < {TARGET_S:.0f} s: "
          f"{'MET' if bounded < TARGET_S else 'MISSED'} ({bounded_series} samples; in a scrape {shown:.2f} s "
          "after the first)")
    return 0
