"""A container's command line as the kubelet starts it, from its spec: the environment resolved (plain
values and Secret keys) and `$(VAR)` expanded in command and args, so a test can run outside Docker
exactly what a manifest runs.

Ported from kubernetes v1.34.4: `third_party/forked/golang/expansion/expand.go` (Expand,
MappingFuncFor) and `pkg/kubelet/container/helpers.go` (ExpandContainerCommandAndArgs); env values
are expanded over the variables defined before them, Secret values never
(`pkg/kubelet/kubelet_pods.go` makeEnvironmentVariables)."""
from __future__ import annotations

from collections.abc import Mapping

OPERATOR, OPENER, CLOSER = "$", "(", ")"


def expand(text: str, variables: Mapping[str, str]) -> str:
    """`text` with each `$(NAME)` of a defined NAME replaced; `$$` is a literal `$`; an undefined or
    unterminated reference is left as written (the kubelet's rules, not a shell's)."""
    out: list[str] = []
    checkpoint, cursor = 0, 0
    while cursor < len(text):
        if text[cursor] == OPERATOR and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1:]
            if rest[0] == OPERATOR:  # escaped operator
                out.append(OPERATOR)
                advance = 1
            elif rest[0] == OPENER and CLOSER in rest[1:]:
                name = rest[1:rest.index(CLOSER, 1)]
                out.append(variables.get(name, f"{OPERATOR}{OPENER}{name}{CLOSER}"))
                advance = len(name) + 2
            elif rest[0] == OPENER:  # incomplete reference: kept, scanning goes on after the "("
                out.append(OPERATOR + OPENER)
                advance = 1
            else:
                out.append(OPERATOR + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def container_env(container: Mapping, secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The container's environment (`env` only): `secrets` maps a Secret's name to its decoded data.
    A source this does not resolve, or a missing Secret or key, is an error (a pod would not start)."""
    env: dict[str, str] = {}
    for variable in container.get("env", []):
        name = variable["name"]
        if "value" in variable:
            env[name] = expand(variable["value"], env)
            continue
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference is None:
            raise ValueError(f"env {name}: only value and valueFrom.secretKeyRef are resolved here, not {variable}")
        secret = secrets.get(reference["name"])
        if secret is None or reference["key"] not in secret:
            raise ValueError(f"env {name}: no key {reference['key']!r} in Secret {reference['name']!r}")
        env[name] = secret[reference["key"]]
    return env


def command_line(container: Mapping, secrets: Mapping[str, Mapping[str, str]]) -> tuple[list[str], dict[str, str]]:
    """The argv the kubelet starts (command then args, each expanded) and the container's environment."""
    env = container_env(container, secrets)
    argv = [expand(part, env) for part in [*container.get("command", []), *container.get("args", [])]]
    return argv, env


def container_port(container: Mapping, port: int | str) -> int:
    """A probe's or Service's `port` as a number: a name resolves to the container port so named."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    if len(named) != 1:
        raise ValueError(f"port {port!r}: the container names {len(named)} ports so")
    return named[0]
