"""Canary operations once, over an InferenceService store (`operations`: deploy a canary, set its
percent, promote, roll back), MLflow's aliases beside them (`registry_aliases`), and the pipeline's
deploy step (`deploy`)."""
