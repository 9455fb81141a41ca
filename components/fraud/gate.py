"""The deployment gate: one rule set, failing closed.

The candidate is promoted to a canary only if the holdout holds enough frauds to judge it, it meets absolute floors on the holdout, beats the
baseline's recall by a relative margin while losing at most a set amount of precision, the
difference is significant (McNemar), and it uses the baseline's feature contract (the serving
transformer is shared by both revisions during a canary). Missing or non-finite metrics reject.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

PROMOTE, REJECT = "promote", "reject"


@dataclass(frozen=True)
class GatePolicy:
    min_f1: float = 0.75
    min_precision: float = 0.80
    min_recall: float = 0.70
    min_pr_auc: float = 0.70
    #: Candidate recall must exceed baseline recall by this relative margin (0.05 = 5 %).
    min_recall_gain: float = 0.05
    #: Candidate precision may be at most this much (absolute) below the baseline's.
    max_precision_loss: float = 0.05
    #: McNemar p-value must be below this.
    max_p_value: float = 0.01
    #: Frauds the holdout must hold for the other rules to mean anything (recall over a dozen
    #: frauds moves by 8 points per case). Measured at seed 7, fraud rate 0.0017, default floors:
    #: 150,000 transactions (51 holdout frauds) and 300,000 (88) reject on precision and McNemar,
    #: 500,000 (162) and 1,000,000 (≈ 340) promote; so 140, which asks for ≥ 493,000 up front.
    min_holdout_frauds: int = 140


@dataclass(frozen=True)
class Reason:
    rule: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateResult:
    decision: str
    reasons: tuple[Reason, ...]

    def to_dict(self) -> dict:
        return {"decision": self.decision, "reasons": [asdict(r) for r in self.reasons]}

    def to_markdown(self, policy: GatePolicy) -> str:
        lines = [f"# Deployment gate: **{self.decision.upper()}**", "",
                 "| rule | result | detail |", "|---|---|---|"]
        lines += [f"| {r.rule} | {'pass' if r.passed else '**FAIL**'} | {r.detail} |" for r in self.reasons]
        lines += ["", "Policy: " + ", ".join(f"`{k}={v}`" for k, v in asdict(policy).items())]
        return "\n".join(lines) + "\n"


def _finite(value: object) -> float | None:
    """`value` as a finite number, else None (missing, NaN, infinite or not a number)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def holdout_frauds(metrics: dict) -> int | None:
    """Frauds in the holdout, from a model's confusion counts (None if missing)."""
    tp, fn = _finite(metrics.get("tp")), _finite(metrics.get("fn"))
    return int(tp + fn) if tp is not None and fn is not None else None


def decide(baseline: dict, candidate: dict, mcnemar_p: float, baseline_contract_id: str,
           candidate_contract_id: str, policy: GatePolicy = GatePolicy()) -> GateResult:
    """Apply every rule to holdout metrics of baseline and candidate; promote only if all pass."""
    reasons: list[Reason] = []

    def rule(name: str, ok: bool, detail: str) -> None:
        reasons.append(Reason(name, bool(ok), detail))

    frauds = holdout_frauds(candidate)
    rule(f"holdout frauds ≥ {policy.min_holdout_frauds}", frauds is not None and frauds >= policy.min_holdout_frauds,
         f"{frauds} frauds in the holdout" if frauds is not None else "holdout fraud count missing")
    for metric, floor in (("f1", policy.min_f1), ("precision", policy.min_precision),
                          ("recall", policy.min_recall), ("pr_auc", policy.min_pr_auc)):
        value = _finite(candidate.get(metric))
        rule(f"candidate {metric} ≥ {floor}", value is not None and value >= floor,
             f"{metric} = {value:.4f}" if value is not None else f"{metric} missing or not finite")

    b_recall, c_recall = _finite(baseline.get("recall")), _finite(candidate.get("recall"))
    if b_recall is not None and c_recall is not None and b_recall > 0:
        gain = (c_recall - b_recall) / b_recall
        rule(f"recall gain ≥ {policy.min_recall_gain:.0%} relative", gain >= policy.min_recall_gain,
             f"{b_recall:.4f} → {c_recall:.4f} ({gain:+.1%})")
    else:
        rule(f"recall gain ≥ {policy.min_recall_gain:.0%} relative", False, "baseline or candidate recall missing, not finite or zero")

    b_precision, c_precision = _finite(baseline.get("precision")), _finite(candidate.get("precision"))
    if b_precision is not None and c_precision is not None:
        loss = b_precision - c_precision
        rule(f"precision loss ≤ {policy.max_precision_loss}", loss <= policy.max_precision_loss,
             f"{b_precision:.4f} → {c_precision:.4f} ({-loss:+.4f})")
    else:
        rule(f"precision loss ≤ {policy.max_precision_loss}", False, "baseline or candidate precision missing or not finite")

    p_value = _finite(mcnemar_p)
    rule(f"McNemar p < {policy.max_p_value}", p_value is not None and p_value < policy.max_p_value,
         f"p = {p_value:.3g}" if p_value is not None else "p missing or not finite")
    rule("same feature contract as baseline", bool(baseline_contract_id) and baseline_contract_id == candidate_contract_id,
         f"baseline {baseline_contract_id or '?'}, candidate {candidate_contract_id or '?'}")

    decision = PROMOTE if all(r.passed for r in reasons) else REJECT
    return GateResult(decision, tuple(reasons))
