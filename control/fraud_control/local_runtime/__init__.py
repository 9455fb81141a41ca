"""The local runtime that plays KServe and Knative on loopback (`runtime`), starting the servers
(`servers`: `python -m fraud_serving …` and the prediction-log sink)."""
