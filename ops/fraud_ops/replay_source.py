"""What a replay sends: a labelled holdout, from a file or from a pipeline run's report (which also
names each version's artifact, for the skew check)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from fraud.schema import FEATURES, LABEL, TRANSACTION_ID, DataError, check_transactions

from fraud_ops import local_defaults

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplaySource:
    """What is replayed: labelled raw transactions, and where they came from."""

    frame: pd.DataFrame  # [transaction_id +] FEATURES + Class, in replay order
    holdout_path: Path
    pipeline_report: Path | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # model_version → artifact root


def read_pipeline_report(path: Path, option: str = "--report") -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{option} {path}: no such file (run `fraud-rollout pipeline run --local` or "
                        "`fraud-rollout demo` first)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{option} {path}: not JSON ({error})") from None
    if not isinstance(report, dict) or "models" not in report:
        raise DataError(f"{option} {path}: not a pipeline report (no 'models')")
    return report


def version_artifacts(report: dict) -> dict[str, str]:
    """model_version ("v1") → exported artifact root, from a pipeline report."""
    return {str(model.get("version", name)): model["artifact"]
            for name, model in report["models"].items() if model.get("artifact")}


def read_holdout(path: Path, option: str = "--holdout") -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{option} {path}: no such file")
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise DataError(f"{option} {path}: cannot read labelled transactions ({error})") from None
    check_transactions(frame, labelled=True, source=f"{option} {path}")
    # the ids (a simulated holdout has them) travel with the requests; never a feature
    ids = [TRANSACTION_ID] if TRANSACTION_ID in frame.columns else []
    return frame.loc[:, [*ids, *FEATURES, LABEL]].reset_index(drop=True)


def load_source(holdout: Path | None, report: Path | None) -> ReplaySource:
    """The holdout to replay: given directly, or the one a pipeline report names."""
    if holdout is not None:
        return ReplaySource(read_holdout(holdout), Path(holdout))
    report_path = Path(report or local_defaults.pipeline_report())
    pipeline = read_pipeline_report(report_path)
    holdout_path = pipeline.get("artifacts", {}).get("holdout")
    if not holdout_path:
        raise DataError(f"--report {report_path}: names no holdout (artifacts.holdout); pass --holdout")
    return ReplaySource(read_holdout(Path(holdout_path), option=f"artifacts.holdout of {report_path}"),
                        Path(holdout_path), report_path.resolve(), version_artifacts(pipeline))
