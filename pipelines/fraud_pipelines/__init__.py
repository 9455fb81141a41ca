"""fraud_pipelines: the KFP pipeline wiring, its compilation and the local (kfp.local) run."""
