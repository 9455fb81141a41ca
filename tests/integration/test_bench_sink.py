"""`fraud-rollout bench sink` at a small size on the demo run's models (the real run, 10,000,000
rows, is in the README's benchmarks): it fills a store in the sink's schema, times the feedback
signals without and with the window's index, and scrapes the real sink."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_bench_sink_times_before_after_and_the_real_sinks_first_scrape(demo_run, tmp_path):
    if not demo_run.pipeline_report.is_file():
        pytest.skip("the demo run failed (see test_demo.py)")
    done = subprocess.run([sys.executable, "-m", "fraud_rollout", "bench", "sink", "--rows", "50000", "--days", "2",
                           "--report", str(demo_run.pipeline_report), "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    summary = lines[lines.index("") + 1:]
    assert summary[0].startswith("bench sink: 50,000 stored rows (") and "about 1,042 in the feedback window (1 h)" in summary[0]
    assert re.fullmatch(r"  feedback signals, no window index \(before\) +\d+\.\d\d s", summary[1]), summary[1]
    assert re.fullmatch(r"  feedback signals, with the index \(after\) +\d+\.\d\d s   \(building the index: \d+ s, once\)",
                        summary[2]), summary[2]
    scrape = re.fullmatch(r"  the real sink, first /metrics after start +\d+\.\d\d s   target < 1 s: (MET|MISSED) "
                          r"\((\d+) fraud_feedback_\* samples\)", summary[3])
    assert scrape is not None and int(scrape.group(2)) > 0, summary[3]
    assert summary[4] == "  a busy window (25 h, about 26,042 rows), the real sink's first /metrics:"
    waited = re.fullmatch(r"    waiting for the signals \(--scrape-wait inf\) +\d+\.\d\d s   \((\d+) samples\)", summary[5])
    assert waited is not None and int(waited.group(1)) == int(scrape.group(2)), summary[5]  # it waited: all there
    bounded = re.fullmatch(r"    waiting at most 0.5 s \(the default\) +(\d+\.\d\d) s   target < 1 s: (MET|MISSED) "
                           r"\((\d+) samples; in a scrape (\d+\.\d\d) s after the first\)", summary[6])
    assert bounded is not None and float(bounded.group(4)) >= float(bounded.group(1)), summary[6]
    assert list(tmp_path.iterdir()) == []  # the store was in a temporary directory under --dir, removed
