"""fraud_canary: canary statistics, pure (no I/O). Three questions, each answered with the sample
size it actually has:

* **Is the canary healthy?** Error rate and p99 latency per version against objectives, and the
  canary's traffic share against the target `canaryTrafficPercent` (`checks`).
* **Does each version behave online as it did offline?** Each version's online recall, precision
  and flag rate must lie in the acceptance interval around its offline holdout value, computed
  with the *online* sample size (`agreement`).
* **Is the canary worse than the baseline?** Two-proportion tests of v2 vs v1 recall, precision
  and flag rate, Fisher's exact test when counts are small (`proportions`), and a power analysis
  that says how many requests are needed before "no significant difference" means anything
  (`evidence`).

Modules: `metrics` (per-version online metrics), `proportions`, `agreement`, `evidence`, `policy`
(`CanaryPolicy`, `OfflineMetrics`), `checks` (one function per rule), `decision` (`recommend`:
promote / hold / rollback, failing closed) and `analysis` (the recommendation under the stated
policy and the default one, as `canary analyze` reports it); `paired` (both versions' decisions on
the same rows, McNemar's exact test) and `progressive` (`decide_step`: advance, hold, roll back or
promote one step of a progressive rollout).
"""
