"""fraud_serving: the data plane. KServe predictor and transformer for the fraud model, and a v2
client. Imports only the core (`fraud`): the serving image holds this package and nothing else."""
