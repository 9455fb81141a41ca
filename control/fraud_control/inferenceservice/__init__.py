"""The InferenceService: its manifest and patches (`isvc`, `kserve_canary`), traffic status
(`traffic`), the evidence subject (`subject`), and the store it lives in (`store`: the protocol;
`kube_store`: the Kubernetes API; `local_store` over `local_state`: the local state dir)."""
