"""A real Kubernetes control plane on loopback, for tests and for trying the kserve target without
a cluster: kube-apiserver and etcd, KServe's CRDs, webhooks and controller manager, Knative
Serving's CRDs, and MinIO, all built from their Go modules at pinned versions (DESIGN decision 17).

No pods run here, so `knative` plays Knative's revision and route controllers in `status`, as
KServe's own controller tests do. `cluster.up()` starts everything; `make cluster` and the test
fixtures call the same code."""
