"""The label-free signals of live traffic, per version and per feature, in one value that the
Prometheus collector (`fraud_control.prediction_log.feedback_metrics`) and the report read.

Paired CBPE (`paired_estimates`). CBPE on a model's own calibrated scores cannot see concept
drift: the frauds of a pattern the model scores low look legitimate to it (v1 on the drifted
holdout: estimated recall 0.651 [0.560, 0.751], true 0.361). With shadow scoring, every paired row
also has the other version's score, so each version's decisions can be judged by the calibration
of the version fitted on the most recent labelled data (the candidate, trained on the recent
window): E[TP] = Σ_flagged p_ref, E[FN] = Σ_not-flagged p_ref, with the same Monte Carlo interval.
It holds as long as the reference's calibration does, which its own CBPE and score shift watch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from fraud.profile import FeatureProfile
from fraud.score_profile import ScoreProfile

from fraud_canary.feature_drift import DRIFT_ALPHA, FeatureDrift, drift_alerts, feature_drift
from fraud_canary.performance import Estimate, PerformanceEstimate, estimate_performance
from fraud_canary.score_shift import flag_rate, score_ks, score_psi

#: The thresholds of the fraud-detector.feedback alerts (manifests/monitoring; a test compares them).
SCORE_SHIFT_KS = 0.05  # FraudScoreShift: KS statistic above this …
SCORE_SHIFT_P = 0.01  # … and its p-value below this
RECALL_FLOOR = 0.70  # FraudEstimatedRecallLow: the CBPE interval's upper end below the gate's min_recall


@dataclass(frozen=True)
class VersionSignals:
    """One version's served rows against its own offline profile."""

    model_version: str
    rows: int
    flag_rate: float
    score_psi: float
    score_ks: float
    score_ks_p: float
    precision: Estimate
    recall: Estimate


@dataclass(frozen=True)
class FeedbackSignals:
    versions: tuple[VersionSignals, ...]
    features: tuple[FeatureDrift, ...]
    #: paired CBPE per version under `paired_reference`'s calibration (empty without shadow pairs)
    paired: dict[str, PerformanceEstimate] = field(default_factory=dict)
    paired_reference: str | None = None


def version_signals(model_version: str, scores: np.ndarray, decisions: np.ndarray, profile: ScoreProfile,
                    seed: int = 0) -> VersionSignals:
    """Flag rate, score shift (PSI, KS) and CBPE precision/recall of one version's served rows."""
    ks = score_ks(scores, profile)
    performance = estimate_performance(scores, decisions, profile, seed=seed)
    return VersionSignals(model_version, len(np.asarray(scores)), flag_rate(decisions), score_psi(scores, profile),
                          ks.statistic, ks.p_value, performance.precision, performance.recall)


def feedback_signals(rows: dict[str, tuple[np.ndarray, np.ndarray]], profiles: dict[str, ScoreProfile],
                     features: np.ndarray, feature_profile: FeatureProfile, alpha: float = DRIFT_ALPHA, *,
                     judged: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                     reference: str | None = None) -> FeedbackSignals:
    """Signals of a window of served rows: `rows[version] = (scores, decisions)` scored against
    `profiles[version]`, the drift of every row's raw `features` `[N, F]` (all versions), and with
    shadow pairs the paired CBPE of `judged` (`paired_estimates`) under `profiles[reference]`."""
    versions = tuple(version_signals(v, scores, decisions, profiles[v]) for v, (scores, decisions) in sorted(rows.items()))
    drift = tuple(feature_drift(features, feature_profile, alpha))
    if not judged or reference is None:
        return FeedbackSignals(versions, drift)
    return FeedbackSignals(versions, drift, paired_estimates(judged, profiles[reference]), reference)


def feedback_alerts(signals: FeedbackSignals) -> list[dict]:
    """The fraud-detector.feedback alerts these signals fire, as the rules decide them."""
    alerts = drift_alerts(list(signals.features))
    for version in signals.versions:
        if version.score_ks > SCORE_SHIFT_KS and version.score_ks_p < SCORE_SHIFT_P:
            alerts.append({"alert": "FraudScoreShift", "model_version": version.model_version, "ks": version.score_ks,
                           "p_value": version.score_ks_p})
        if version.recall.upper < RECALL_FLOOR:
            alerts.append({"alert": "FraudEstimatedRecallLow", "model_version": version.model_version,
                           "upper": version.recall.upper})
    for model_version, estimate in sorted(signals.paired.items()):
        if estimate.recall.upper < RECALL_FLOOR:
            alerts.append({"alert": "FraudPairedRecallLow", "model_version": model_version,
                           "reference": signals.paired_reference, "upper": estimate.recall.upper})
    return alerts


def paired_estimates(judged: dict[str, tuple[np.ndarray, np.ndarray]], reference: ScoreProfile,
                     seed: int = 0) -> dict[str, PerformanceEstimate]:
    """Each version's precision and recall on its shadow pairs, from the reference version's scores
    of the same rows under the reference's calibration: `judged[version] = (reference scores,
    version's decisions)` (`fraud_canary.served.judged_by`)."""
    return {version: estimate_performance(scores, decisions, reference, seed=seed)
            for version, (scores, decisions) in sorted(judged.items())}
