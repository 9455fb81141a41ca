"""The label-free feedback signals as Prometheus gauges: a custom collector that exports, at each
scrape, the latest `FeedbackSignals` its source returns (computed from the prediction store by
`fraud_control.prediction_log.feedback`, not on the serving path; the prediction sink serves them on its
/metrics when given the models, `--model`).

    fraud_feedback_rows{model_version}                         served rows the signals are over
    fraud_feedback_flag_rate{model_version}
    fraud_feedback_score_psi{model_version}                    served vs offline (validation) scores
    fraud_feedback_score_ks{model_version}, fraud_feedback_score_ks_p_value{model_version}
    fraud_feedback_estimated_precision{model_version, bound="estimate|lower|upper"}   CBPE, 95 %
    fraud_feedback_estimated_recall{model_version, bound=…}
    fraud_feedback_paired_estimated_precision{model_version, reference, bound}   paired CBPE: the version's
    fraud_feedback_paired_estimated_recall{model_version, reference, bound}      decisions, reference's calibration
    fraud_feature_drift_psi{feature}, fraud_feature_drift_adjusted_p{feature}, fraud_feature_drifted{feature}

manifests/monitoring/rules/fraud-detector.rules.yaml alerts on them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from fraud_canary.feedback import FeedbackSignals
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BOUNDS = ("estimate", "lower", "upper")


class FeedbackCollector(Collector):
    """Exports `source()`'s signals at every scrape; nothing when it returns None (no window yet)."""

    def __init__(self, source: Callable[[], FeedbackSignals | None]) -> None:
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        signals = self.source()
        if signals is None:
            return
        yield from version_families(signals)
        yield from paired_families(signals)
        yield from feature_families(signals)


def version_families(signals: FeedbackSignals) -> Iterator[GaugeMetricFamily]:
    per_version = {
        "rows": ("fraud_feedback_rows", "Served rows the feedback signals are computed over"),
        "flag_rate": ("fraud_feedback_flag_rate", "Share of served rows flagged as fraud"),
        "score_psi": ("fraud_feedback_score_psi", "PSI of served scores against the model's validation scores"),
        "score_ks": ("fraud_feedback_score_ks", "KS statistic of served scores against the model's validation scores"),
        "score_ks_p": ("fraud_feedback_score_ks_p_value", "p-value of that KS statistic"),
    }
    for field, (name, documentation) in per_version.items():
        family = GaugeMetricFamily(name, documentation, labels=["model_version"])
        for version in signals.versions:
            family.add_metric([version.model_version], float(getattr(version, field)))
        yield family
    for field, name in (("precision", "fraud_feedback_estimated_precision"), ("recall", "fraud_feedback_estimated_recall")):
        family = GaugeMetricFamily(name, f"CBPE estimated {field} from calibrated scores, with its 95 % interval",
                                   labels=["model_version", "bound"])
        for version in signals.versions:
            estimate = getattr(version, field)
            for bound in BOUNDS:
                family.add_metric([version.model_version, bound], float(getattr(estimate, bound)))
        yield family


def paired_families(signals: FeedbackSignals) -> Iterator[GaugeMetricFamily]:
    for field in ("precision", "recall"):
        family = GaugeMetricFamily(f"fraud_feedback_paired_estimated_{field}",
                                   f"Paired CBPE {field}: the version's decisions on its shadow pairs under the "
                                   "reference (newest) model's calibration, with its 95 % interval",
                                   labels=["model_version", "reference", "bound"])
        for version, estimate in sorted(signals.paired.items()):
            for bound in BOUNDS:
                family.add_metric([version, str(signals.paired_reference), bound],
                                  float(getattr(getattr(estimate, field), bound)))
        yield family


def feature_families(signals: FeedbackSignals) -> Iterator[GaugeMetricFamily]:
    psi = GaugeMetricFamily("fraud_feature_drift_psi", "PSI of a feature against the contract's reference window",
                            labels=["feature"])
    adjusted = GaugeMetricFamily("fraud_feature_drift_adjusted_p",
                                 "Holm-adjusted chi-square p-value of a feature's drift", labels=["feature"])
    drifted = GaugeMetricFamily("fraud_feature_drifted", "1 when the feature drifted (adjusted p < alpha)",
                                labels=["feature"])
    for drift in signals.features:
        psi.add_metric([drift.feature], drift.psi)
        adjusted.add_metric([drift.feature], drift.adjusted_p)
        drifted.add_metric([drift.feature], float(drift.drifted))
    yield from (psi, adjusted, drifted)
