"""The pinned third-party servers: Go module, version, and the main package to build.

KServe's controller is v0.20.0 while the Python `kserve` is 0.21.0: the Go module proxy serves no
v0.21.x of github.com/kserve/kserve ("This module version is not available"). The v1beta1 API the
rollout uses is the same in both. kube-apiserver follows the Kubernetes minor KServe v0.20 builds
against (k8s.io/* v0.34), and etcd the version Kubernetes 1.34 is tested with (3.6).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GoServer:
    """A server binary built with `go build <package>` inside a module that requires `module@version`."""

    name: str
    module: str
    version: str
    package: str
    #: `go mod edit -replace` pairs the module needs (its own go.mod's replaces do not apply to a dependency).
    replaces: tuple[tuple[str, str], ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


KUBERNETES_VERSION = "v1.34.4"
#: k8s.io/kubernetes replaces its staging modules with ./staging/src/k8s.io/*; `gobuild` reads those
#: from its go.mod and takes them from the proxy at v0.<minor>.<patch> instead.
KUBE_APISERVER = GoServer("kube-apiserver", "k8s.io/kubernetes", KUBERNETES_VERSION,
                          "k8s.io/kubernetes/cmd/kube-apiserver")

ETCD = GoServer("etcd", "go.etcd.io/etcd/server/v3", "v3.6.16", "go.etcd.io/etcd/server/v3")

KSERVE = GoServer(
    "kserve-manager", "github.com/kserve/kserve", "v0.20.0", "github.com/kserve/kserve/cmd/manager",
    # github.com/kserve/kserve v0.20.0's own go.mod replaces
    (("sigs.k8s.io/controller-runtime", "sigs.k8s.io/controller-runtime@v0.22.5"),
     ("k8s.io/api", "k8s.io/api@v0.34.5"),
     ("k8s.io/apiextensions-apiserver", "k8s.io/apiextensions-apiserver@v0.34.3"),
     ("k8s.io/apimachinery", "k8s.io/apimachinery@v0.34.5"),
     ("k8s.io/apiserver", "k8s.io/apiserver@v0.34.3"),
     ("k8s.io/client-go", "k8s.io/client-go@v0.34.5"),
     ("k8s.io/code-generator", "k8s.io/code-generator@v0.34.3"),
     ("k8s.io/component-base", "k8s.io/component-base@v0.34.3"),
     ("k8s.io/component-helpers", "k8s.io/component-helpers@v0.34.3"),
     ("github.com/expr-lang/expr", "github.com/expr-lang/expr@v1.17.7"),
     ("google.golang.org/grpc", "google.golang.org/grpc@v1.79.3"),
     ("github.com/lyft/protoc-gen-validate", "github.com/envoyproxy/protoc-gen-validate@v1.0.4")))

#: MinIO tags releases as RELEASE.<date>, not semver: the proxy serves pseudo-versions only.
MINIO = GoServer("minio", "github.com/minio/minio", "v0.0.0-20260212201848-7aac2a2c5b7c", "github.com/minio/minio")

SERVERS = (ETCD, KUBE_APISERVER, KSERVE, MINIO)

#: The Knative Serving module whose CRDs KServe v0.20 is built against (its go.mod).
KNATIVE_SERVING = ("knative.dev/serving", "v0.48.1")
