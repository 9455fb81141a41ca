"""Paired evidence: the same rows decided by both versions (shadow scoring), and McNemar's test.

Why pairs. Two independent slices (80 % of traffic to the baseline, 20 % to the canary) compare
two recalls, each estimated from its slice's rare frauds: the unpaired test needs ≈ 214 frauds in
the canary's slice to detect a 0.10 drop. Scored on both versions, a fraud either is caught by both,
by neither, or by one only; only the last kind (discordant pairs) carries information about which is
better, and no slice is thrown away. McNemar's exact test asks whether the discordant pairs split
evenly: under H0 (equal recall) the rows only the canary got right are Binomial(discordant, ½).

Three tables, each from the same rows:

- `decisions`: flagged by one version only (no labels needed): the paired flag-rate shift and the
  disagreement rate, available at once;
- `frauds`: among labelled frauds, caught by one only (paired recall, the test that decides);
- `legit`: among labelled legitimate rows, flagged by one only (paired false-alarm rate).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from fraud_canary.counts import ratio


@dataclass(frozen=True)
class Discordant:
    """Rows where exactly one version has the property (caught, flagged …): `canary_only` vs `baseline_only`."""

    pairs: int
    canary_only: int
    baseline_only: int
    #: Rows where both versions have it; None when not counted (the rates, and their ratio, are then unknown).
    both: int | None = None

    def __post_init__(self) -> None:
        both = self.both or 0
        if min(self.pairs, self.canary_only, self.baseline_only, both) < 0 or \
                self.canary_only + self.baseline_only + both > self.pairs:
            raise ValueError(f"need 0 ≤ canary_only + baseline_only + both ≤ pairs, got {self}")

    @property
    def discordant(self) -> int:
        return self.canary_only + self.baseline_only

    @property
    def rate(self) -> float:
        """Share of pairs the versions disagree on (NaN without pairs)."""
        return ratio(self.discordant, self.pairs)

    @property
    def difference(self) -> float:
        """canary − baseline proportion on these pairs: (canary_only − baseline_only) / pairs."""
        return ratio(self.canary_only - self.baseline_only, self.pairs)

    @property
    def canary_rate(self) -> float:
        """Share of pairs where the canary has it (NaN when `both` was not counted)."""
        return math.nan if self.both is None else ratio(self.both + self.canary_only, self.pairs)

    @property
    def baseline_rate(self) -> float:
        """Share of pairs where the baseline has it (NaN when `both` was not counted)."""
        return math.nan if self.both is None else ratio(self.both + self.baseline_only, self.pairs)

    @property
    def p_value(self) -> float:
        """McNemar's exact (binomial) two-sided p-value; NaN without discordant pairs (no evidence either way)."""
        if self.discordant == 0:
            return math.nan
        return float(stats.binomtest(self.canary_only, self.discordant, 0.5).pvalue)

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "canary_only": self.canary_only, "baseline_only": self.baseline_only,
                "both": self.both, "discordant_rate": self.rate, "difference": self.difference, "p_value": self.p_value,
                "method": "mcnemar-exact"}


@dataclass(frozen=True)
class PairedOutcomes:
    """Both versions' decisions on the same rows; `frauds` and `legit` only once labels are known."""

    baseline_version: str
    canary_version: str
    decisions: Discordant  # flagged by one version only
    frauds: Discordant | None = None  # caught by one version only
    legit: Discordant | None = None  # false alarm of one version only

    @property
    def pairs(self) -> int:
        return self.decisions.pairs

    @classmethod
    def from_dict(cls, shown: Mapping[str, Any]) -> PairedOutcomes:
        """Back from `to_dict()` (a replay report's `paired`)."""

        def table(part: Mapping[str, Any] | None) -> Discordant | None:
            return None if part is None else Discordant(int(part["pairs"]), int(part["canary_only"]),
                                                        int(part["baseline_only"]), part.get("both"))

        decisions = table(shown["decisions"])
        assert decisions is not None  # every PairedOutcomes has its decision table
        return cls(str(shown["baseline_version"]), str(shown["canary_version"]), decisions,
                   frauds=table(shown.get("frauds")), legit=table(shown.get("legit")))

    def to_dict(self) -> dict[str, Any]:
        """The report's `analysis.paired`: pairs, the recall test's discordant counts by version, its p."""
        frauds = self.frauds
        caught = {f"{self.canary_version}_only_right": frauds.canary_only if frauds else None,
                  f"{self.baseline_version}_only_right": frauds.baseline_only if frauds else None}
        return {"baseline_version": self.baseline_version, "canary_version": self.canary_version,
                "pairs": self.pairs, **caught,
                "canary_only_right": frauds.canary_only if frauds else None,
                "baseline_only_right": frauds.baseline_only if frauds else None,
                "p_value": frauds.p_value if frauds else None,
                "decisions": self.decisions.to_dict(), "frauds": frauds.to_dict() if frauds else None,
                "legit": self.legit.to_dict() if self.legit else None}


def discordant(canary: np.ndarray, baseline: np.ndarray) -> Discordant:
    """Count rows where exactly one of two boolean arrays (same rows) is true."""
    canary, baseline = np.asarray(canary, dtype=bool), np.asarray(baseline, dtype=bool)
    if canary.shape != baseline.shape:
        raise ValueError(f"paired decisions differ in shape: {canary.shape} vs {baseline.shape}")
    return Discordant(pairs=int(canary.size), canary_only=int(np.count_nonzero(canary & ~baseline)),
                      baseline_only=int(np.count_nonzero(baseline & ~canary)),
                      both=int(np.count_nonzero(canary & baseline)))


def paired_outcomes(baseline_flags: np.ndarray, canary_flags: np.ndarray, *, baseline_version: str,
                    canary_version: str, labels: np.ndarray | None = None) -> PairedOutcomes:
    """Paired tables from both versions' decisions (is_fraud) on the same rows, and their labels if known."""
    decisions = discordant(canary_flags, baseline_flags)
    if labels is None:
        return PairedOutcomes(baseline_version, canary_version, decisions)
    fraud = np.asarray(labels, dtype=bool)
    canary_flags, baseline_flags = np.asarray(canary_flags, dtype=bool), np.asarray(baseline_flags, dtype=bool)
    if fraud.shape != canary_flags.shape:
        raise ValueError(f"labels and decisions differ in shape: {fraud.shape} vs {canary_flags.shape}")
    return PairedOutcomes(baseline_version, canary_version, decisions,
                          frauds=discordant(canary_flags[fraud], baseline_flags[fraud]),
                          legit=discordant(canary_flags[~fraud], baseline_flags[~fraud]))


def combine(parts: list[PairedOutcomes]) -> PairedOutcomes | None:
    """Sum of paired tables for the same two versions (windows of one step, or several steps)."""
    if not parts:
        return None
    first = parts[0]
    if any((p.baseline_version, p.canary_version) != (first.baseline_version, first.canary_version) for p in parts):
        raise ValueError("paired outcomes of different version pairs cannot be combined")

    def total(tables: list[Discordant | None]) -> Discordant | None:
        if any(t is None for t in tables):
            return None
        known = [t for t in tables if t is not None]
        both = [t.both for t in known]
        return Discordant(sum(t.pairs for t in known), sum(t.canary_only for t in known),
                          sum(t.baseline_only for t in known),
                          None if any(b is None for b in both) else sum(b for b in both if b is not None))

    decisions = total([p.decisions for p in parts])
    assert decisions is not None  # every part has decisions
    return PairedOutcomes(first.baseline_version, first.canary_version, decisions,
                          frauds=total([p.frauds for p in parts]), legit=total([p.legit for p in parts]))
