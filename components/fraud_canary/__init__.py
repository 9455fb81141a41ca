"""fraud_canary: canary statistics, pure (no I/O): per-version online metrics, proportion tests and
intervals, evidence planning, and the promote / hold / rollback recommendation."""
