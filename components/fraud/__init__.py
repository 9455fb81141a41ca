"""fraud: the plain-Python core of fraud-rollout (no kfp or kserve imports).

Modules: schema (columns, input checks), contract (feature scaling shared by training and
serving), simulate (drifting transactions and time windows), train, export (SavedModel in Triton
layout), evaluate, gate, registry (MLflow); below both planes, processes (free ports, server
processes, stopping them) and artifact_store (MinIO/S3).
"""
