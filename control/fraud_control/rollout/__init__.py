"""The progressive rollout: the controller (`controller`), its state (`state`), its evidence
(`evidence`: the transformer's counters; `prometheus`; `store_evidence`: the prediction store),
its step records (`record`), the analysis endpoint (`analysis_endpoint`), the wiring of `rollout
start` and the pipeline step (`run`), and the label-free rule's coverage study
(`label_free_coverage`)."""
