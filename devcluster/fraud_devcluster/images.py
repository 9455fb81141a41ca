"""`make images`: the components and serving images, built with podman (buildah inside; no Docker
daemon) from the repository's Dockerfiles, on a Debian base made here by mmdebstrap (Docker Hub is
out of reach on these machines; users keep the Dockerfiles' default `python:3.11-slim`).

Each image is tagged `<registry>/<name>:<version>-<hash of its inputs>` (the Dockerfile, the base
and every file its COPY steps take), and built only when no image has that tag: podman's store
is the cache, as ~/.cache is for the Go servers. The base is tagged by its Debian suite and packages.

Rootful podman on this machine kind runs containers only with runc, the cgroupfs manager and no
default ulimits (crun: "cgroups in hybrid mode not supported"; ulimits: setrlimit EPERM), so every
podman call here gets a `containers.conf` saying so through CONTAINERS_CONF. PyPI sits behind a
TLS-intercepting proxy here: the host's CA bundle goes in as a build secret, never into a layer.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fraud-rollout" / "images"
#: Where `make images` records what it built (the tests and `pipeline run --runner docker` read it).
BUILT = REPO / ".fraud-rollout" / "images.json"
DEFAULT_REGISTRY = "localhost/fraud-rollout"
CONTAINERS_CONF = """[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
"""
BASE_SUITE = "bookworm"  # Debian 12: Python 3.11, as the locks are compiled for
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
TOOLS = ("podman", "buildah", "mmdebstrap", "runc")
#: Never in the serving image: the pipeline, the tracking server, test and build tools.
NOT_SERVING = ("kfp", "mlflow", "minio", "pytest", "ruff", "mypy", "pip", "uv")
SKIP = re.compile(r"(^|/)(__pycache__|[^/]*\.egg-info|\.ipynb_checkpoints)(/|$)|\.pyc$")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s*[A-Za-z0-9+/=\s]{64,}-----END")
#: Third-party packages' own test keys (public by design): pycryptodome's SelfTest, tornado's test.key.
TEST_FIXTURE = re.compile(r"/site-packages/[^/]+/(.*/)?(SelfTest|tests?)/")


class ImageError(RuntimeError):
    """A tool is missing or a build failed; the message says which and where the log is."""


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: str  # relative to the repository root, the build context


IMAGES = (Image("components", "components/Dockerfile"), Image("serving", "serving/Dockerfile"))


def containers_conf() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "containers.conf"
    if not path.is_file() or path.read_text() != CONTAINERS_CONF:
        path.write_text(CONTAINERS_CONF)
    return path


def podman_env() -> dict[str, str]:
    """The environment every podman call here runs with (runc, cgroupfs, no default ulimits)."""
    return {**os.environ, "CONTAINERS_CONF": str(containers_conf())}


def podman(*args: str, log: Path | None = None) -> str:
    """`podman ARGS` (stdout), or ImageError with its last lines."""
    if shutil.which("podman") is None:
        raise ImageError("podman is not installed: `apt-get install podman buildah mmdebstrap runc` (make images does)")
    if log is None:
        done = subprocess.run(["podman", *args], capture_output=True, text=True, env=podman_env(), check=False)
        if done.returncode != 0:
            raise ImageError(f"podman {' '.join(args[:2])} failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
        return done.stdout
    with log.open("a") as out:
        out.write(f"$ podman {shlex.join(args)}\n")
        out.flush()
        logged = subprocess.run(["podman", *args], stdout=out, stderr=subprocess.STDOUT, env=podman_env(), check=False)
    if logged.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-12:])
        raise ImageError(f"podman {' '.join(args[:2])} failed (exit {logged.returncode}); last lines of {log}:\n{tail}")
    return ""


def exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag], env=podman_env(), check=False).returncode == 0


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(KEYWORD, rest) per instruction, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest))
            current = ""
    return lines


def copied(dockerfile: Path) -> list[str]:
    """The repository paths the Dockerfile's COPY steps take from the build context."""
    sources = []
    for keyword, rest in instructions(dockerfile):
        if keyword == "COPY" and not rest.startswith("--from"):
            sources += shlex.split(rest)[:-1]
    return sources


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not SKIP.search(p.relative_to(REPO).as_posix()))


def input_hash(image: Image, base: str) -> str:
    """sha256 over the base's tag, the Dockerfile and every file it copies (path and bytes)."""
    digest = hashlib.sha256(f"base={base}\n".encode())
    dockerfile = REPO / image.dockerfile
    for path in [dockerfile, *(f for source in copied(dockerfile) for f in _files(REPO / source))]:
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def image_tag(image: Image, base: str, registry: str = DEFAULT_REGISTRY) -> str:
    return f"{registry.rstrip('/')}/{image.name}:{project_version()}-{input_hash(image, base)[:12]}"


def base_image(log: Path) -> str:
    """The Debian base (mmdebstrap's minbase with Python 3.11), imported into podman once."""
    digest = hashlib.sha256(f"{BASE_SUITE} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:12]
    tag = f"{DEFAULT_REGISTRY}/debian-base:{BASE_SUITE}-{digest}"
    if exists(tag):
        return tag
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed: `apt-get install mmdebstrap` (make images does)")
    rootfs = CACHE / f"rootfs-{digest}.tar"
    with log.open("a") as out:
        done = subprocess.run(["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE,
                               str(rootfs)], stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise ImageError(f"mmdebstrap {BASE_SUITE} failed (exit {done.returncode}); see {log}")
    podman("import", "--change", "CMD [\"python3\"]", str(rootfs), tag, log=log)
    rootfs.unlink()
    return tag


@dataclass(frozen=True)
class Facts:
    """What `make images` reports of an image."""

    image: str
    size_mb: float
    user: str
    uid: int
    packages: dict[str, str]  # distribution → version, in the image's venv
    largest: list[tuple[str, float]]  # the biggest site-packages entries, MB
    secrets: list[str]  # files whose bytes look like a credential (should be none)


LIST_PACKAGES = ("import importlib.metadata as m, json, os, re; "
                 "print(json.dumps({'uid': os.getuid(), 'packages': {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower(): "
                 "d.version for d in m.distributions()}}))")  # names normalised as PEP 503 does


def facts(tag: str) -> Facts:
    inspect = json.loads(podman("image", "inspect", tag))[0]
    inside = json.loads(podman("run", "--rm", "--network", "none", "--entrypoint", "python3", tag, "-c", LIST_PACKAGES))
    sizes = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", tag, "-c",
                   "du -sm /opt/venv/lib/python3*/site-packages/* | sort -n | tail -n 5")
    largest = [(Path(path).name, float(mb)) for mb, path in (line.split("\t") for line in sizes.splitlines())]
    return Facts(tag, round(inspect["Size"] / 1e6, 1), inspect["Config"].get("User", ""), inside["uid"],
                 inside["packages"], largest[::-1], credential_files(tag))


def credential_files(tag: str) -> list[str]:
    """What in the image could be a credential: ENV names that say secret, files holding the value
    of any secret-named variable of the building environment, and private keys (a PEM block with a
    body) outside third-party packages' own test fixtures. The final stage deletes nothing, so its
    merged tree holds every byte of its layers. Expected: none."""
    env = json.loads(podman("image", "inspect", tag))[0]["Config"].get("Env") or []
    found = [f"ENV {e.split('=')[0]}" for e in env if SECRET_NAME.search(e.split("=")[0])]
    values = [v.encode() for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 8]
    root = Path(podman("image", "mount", tag).strip())
    try:
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink() or path.stat().st_size > 1_000_000:
                continue
            data = path.read_bytes()
            inside = "/" + str(path.relative_to(root))
            if any(v in data for v in values) or (PRIVATE_KEY.search(data) and not TEST_FIXTURE.search(inside)):
                found.append(inside)
    finally:
        podman("image", "unmount", tag)
    return found


def build(image: Image, base: str, registry: str, log: Path) -> tuple[str, bool]:
    """(tag, built now): the image at its input hash, built unless podman already has it."""
    tag = image_tag(image, base, registry)
    if exists(tag):
        return tag, False
    suffix = "/" + tag.rsplit("/", 1)[1]  # the same inputs built for another registry: the same image
    same = [t for t in podman("images", "--format", "{{.Repository}}:{{.Tag}}").split() if t.endswith(suffix)]
    if same:
        podman("tag", same[0], tag)
        return tag, False
    args = ["build", "--network", "host", "--layers", "--build-arg", f"BASE={base}", "-f", image.dockerfile, "-t", tag]
    if HOST_CA.is_file():
        args += ["--secret", f"id=pip-ca,src={HOST_CA}"]
    podman(*args, str(REPO), log=log)
    return tag, True


def remove_older(registry: str, current: dict[str, str]) -> list[str]:
    """Untag this registry's earlier builds of our images and prune what nothing tags any more
    (each build is about 3 GB: a store that keeps them all fills the disk). Layers the current
    images share are kept; the build stages' layer cache is not (uv's download cache is)."""
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    ours = {f"{registry.rstrip('/')}/{name}" for name in current}
    older = [tag for tag in listed if tag.rsplit(":", 1)[0] in ours and tag not in current.values()]
    for tag in older:
        podman("untag", tag, tag)  # only this name: an image can carry the current one too
    podman("image", "prune", "--force")
    return older


def check_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise ImageError(f"missing {', '.join(missing)}: `apt-get install podman buildah mmdebstrap runc` (make images "
                         "does)")


def build_all(registry: str = DEFAULT_REGISTRY, *, with_facts: bool = True) -> dict[str, dict]:
    """Both images (building what is missing), their facts, recorded in `BUILT`."""
    check_tools()
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / "build.log"
    started = time.monotonic()
    try:
        before = json.loads(BUILT.read_text())["images"]
    except (OSError, ValueError, KeyError):
        before = {}
    print(f"images: base {BASE_SUITE} ({', '.join(BASE_PACKAGES)}) …", file=sys.stderr, flush=True)
    base = base_image(log)
    out: dict[str, dict] = {}
    for image in IMAGES:
        began = time.monotonic()
        print(f"images: {image.name} from {image.dockerfile} on {base} (log: {log}) …", file=sys.stderr, flush=True)
        tag, built = build(image, base, registry, log)
        record: dict = {"image": tag, "built": built, "seconds": round(time.monotonic() - began, 1)}
        known = before.get(image.name, {})
        if with_facts and not built and known.get("image") == tag and "packages" in known:
            record.update({k: v for k, v in known.items() if k not in record})  # the same image: the same facts
        elif with_facts:
            record.update(asdict(facts(tag)))
        out[image.name] = record
    removed = remove_older(registry, {name: record["image"] for name, record in out.items()})
    if removed:
        print(f"images: removed the earlier builds {', '.join(removed)}", file=sys.stderr, flush=True)
    BUILT.parent.mkdir(parents=True, exist_ok=True)
    BUILT.write_text(json.dumps({"base": base, "registry": registry, "images": out, "seconds": round(time.monotonic() - started, 1)},
                                indent=2) + "\n")
    return out


def built_image(name: str) -> str:
    """The tag `make images` recorded for `name`; ImageError when it has not run (or the image is gone)."""
    try:
        tag = json.loads(BUILT.read_text())["images"][name]["image"]
    except (OSError, ValueError, KeyError):
        raise ImageError(f"no {name} image recorded in {BUILT}: run `make images` first") from None
    if not exists(tag):
        raise ImageError(f"image {tag} (from {BUILT}) is not in podman's store: run `make images` again")
    return tag


def describe(record: dict) -> str:
    largest = ", ".join(f"{name} {mb:.0f} MB" for name, mb in record["largest"])
    leaks = record["secrets"] or "none"
    return (f"{record['image']}: {record['size_mb']:.0f} MB, user {record['user']} (uid {record['uid']}), "
            f"{len(record['packages'])} Python packages; largest: {largest}; credentials found: {leaks}"
            f"{' (built now, ' + str(record['seconds']) + ' s)' if record['built'] else ' (cached)'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fraud_devcluster.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", default=os.environ.get("REGISTRY") or DEFAULT_REGISTRY,
                        help=f"name the images <registry>/components and <registry>/serving (default {DEFAULT_REGISTRY})")
    parser.add_argument("--json", action="store_true", help="print what was built as JSON")
    parser.add_argument("--print", dest="print_name", choices=[image.name for image in IMAGES],
                        help="only print the tag the last `make images` built for this image")
    args = parser.parse_args(argv)
    try:
        if args.print_name:
            print(built_image(args.print_name))
            return 0
        built = build_all(args.registry)
    except ImageError as error:
        print(f"make images: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(built, indent=2))
    else:
        for record in built.values():
            print(describe(record))
        serving = built["serving"]["packages"]
        print(f"serving image holds none of {', '.join(NOT_SERVING)}: "
              f"{'yes' if not set(NOT_SERVING) & set(serving) else 'NO: ' + ', '.join(sorted(set(NOT_SERVING) & set(serving)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
