"""fraud_control: the control plane, in rooms, each importing only the rooms below it (the
import-linter contract "The control plane's rooms" in pyproject.toml):

- `rollout`: the progressive rollout controller, its state, evidence windows (the transformer's
  counters, Prometheus, the prediction store), step records, the analysis endpoint, and `run`, the
  one wiring of `rollout start` and the pipeline step;
- `canary` | `local_runtime`: canary operations once over an InferenceService store (promote,
  rollback, MLflow aliases) and the deploy step | the local runtime that plays KServe and Knative
  on loopback;
- `prediction_log` | `inferenceservice`: the prediction-log sink, its store and the label-free
  feedback signals | the InferenceService manifest and its patches, traffic status, evidence
  subject, and its store (the Kubernetes API or the local state dir).

The generic process and port helpers and the artifact store (MinIO/S3) sit below, in the core
(`fraud.processes`, `fraud.artifact_store`).

Allowed here: kubernetes, minio, the core and the canary statistics; never kserve or kfp.
"""
