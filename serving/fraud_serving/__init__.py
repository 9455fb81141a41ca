"""fraud_serving: KServe predictor and transformer for the fraud model, the InferenceService
manifest and its canary patches, and the local canary runtime."""
