"""fraud_control: the control plane. The InferenceService manifest and its patches, canary
operations over an InferenceService store (the Kubernetes API or the local state dir), the local
runtime that plays KServe and Knative on loopback, and the artifact store (MinIO/S3).

Allowed here: kubernetes, minio, the core and the canary statistics; never kserve or kfp.
"""
