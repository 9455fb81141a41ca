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
    #: GOTOOLCHAIN for a module whose go.mod asks for a newer Go than the machine's (the go command
    #: takes that toolchain from the module proxy, as any module); None builds with the machine's Go.
    toolchain: str | None = None

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

#: Argo Rollouts' controller, run with `--controllers analysis` to judge the analysis endpoint through
#: real AnalysisRuns. v1.10.2 is the newest release the proxy serves; its Go code is v1.10.1's, its
#: go.mod only asks for Go 1.26.10 (the standard library's security fixes), newer than this machine's
#: 1.26.8, so it builds with go1.27.3, the newer Go this workplace approves. Its k8s.io/* v0.34.5 are
#: the Kubernetes minor of our kube-apiserver. The replaces are its own go.mod's.
ARGO_ROLLOUTS = GoServer(
    "rollouts-controller", "github.com/argoproj/argo-rollouts", "v1.10.2",
    "github.com/argoproj/argo-rollouts/cmd/rollouts-controller",
    (("github.com/go-check/check", "github.com/go-check/check@v0.0.0-20180628173108-788fd7840127"),
     ("github.com/go-telegram-bot-api/telegram-bot-api/v5",
      "github.com/OvyFlash/telegram-bot-api/v5@v5.0.0-20240108230938-63e5c59035bf"),
     *((f"k8s.io/{name}", f"k8s.io/{name}@v0.34.5") for name in (
         "api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime", "client-go",
         "cloud-provider", "cluster-bootstrap", "code-generator", "component-base", "component-helpers",
         "controller-manager", "cri-api", "cri-client", "csi-translation-lib", "dynamic-resource-allocation",
         "endpointslice", "externaljwt", "kms", "kube-aggregator", "kube-controller-manager", "kube-proxy",
         "kube-scheduler", "kubectl", "kubelet", "metrics", "mount-utils", "pod-security-admission",
         "sample-apiserver", "sample-cli-plugin", "sample-controller")),
     ("k8s.io/legacy-cloud-providers", "k8s.io/legacy-cloud-providers@v0.30.14")),
    toolchain="go1.27.3")

#: The CNCF Distribution registry: a real registry for the README's "build, push, compile for the
#: pushed tag" path (`podman push` to it, and the pipeline's image pulled back from it).
REGISTRY = GoServer("registry", "github.com/distribution/distribution/v3", "v3.1.2",
                    "github.com/distribution/distribution/v3/cmd/registry")

SERVERS = (ETCD, KUBE_APISERVER, KSERVE, MINIO, ARGO_ROLLOUTS, REGISTRY)

#: The Knative Serving module whose CRDs KServe v0.20 is built against (its go.mod).
KNATIVE_SERVING = ("knative.dev/serving", "v0.48.1")
