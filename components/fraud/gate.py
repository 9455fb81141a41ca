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
    #: frauds moves by 8 points per case).
    min_holdout_frauds: int = 100


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


def _finite(*values: object) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def holdout_frauds(metrics: dict) -> int | None:
    """Frauds in the holdout, from a model's confusion counts (None if missing)."""
    tp, fn = metrics.get("tp"), metrics.get("fn")
    return int(tp + fn) if _finite(tp, fn) else None


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
        value = candidate.get(metric)
        ok = _finite(value) and value >= floor
        rule(f"candidate {metric} ≥ {floor}", ok, f"{metric} = {value:.4f}" if _finite(value) else f"{metric} missing or not finite")

    b_recall, c_recall = baseline.get("recall"), candidate.get("recall")
    if _finite(b_recall, c_recall) and b_recall > 0:
        gain = (c_recall - b_recall) / b_recall
        rule(f"recall gain ≥ {policy.min_recall_gain:.0%} relative", gain >= policy.min_recall_gain,
             f"{b_recall:.4f} → {c_recall:.4f} ({gain:+.1%})")
    else:
        rule(f"recall gain ≥ {policy.min_recall_gain:.0%} relative", False, "baseline or candidate recall missing, not finite or zero")

    b_precision, c_precision = baseline.get("precision"), candidate.get("precision")
    if _finite(b_precision, c_precision):
        loss = b_precision - c_precision
        rule(f"precision loss ≤ {policy.max_precision_loss}", loss <= policy.max_precision_loss,
             f"{b_precision:.4f} → {c_precision:.4f} ({-loss:+.4f})")
    else:
        rule(f"precision loss ≤ {policy.max_precision_loss}", False, "baseline or candidate precision missing or not finite")

    rule(f"McNemar p < {policy.max_p_value}", _finite(mcnemar_p) and mcnemar_p < policy.max_p_value,
         f"p = {mcnemar_p:.3g}" if _finite(mcnemar_p) else "p missing or not finite")
    rule("same feature contract as baseline", bool(baseline_contract_id) and baseline_contract_id == candidate_contract_id,
         f"baseline {baseline_contract_id or '?'}, candidate {candidate_contract_id or '?'}")

    decision = PROMOTE if all(r.passed for r in reasons) else REJECT
    return GateResult(decision, tuple(reasons))
