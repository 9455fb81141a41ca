"""The InferenceService's traffic state in KServe's own field names, and its Markdown report (the
KFP UI and the CLI print it). Works on any InferenceService dict: a cluster's, or the local state dir's.
"""
from __future__ import annotations

from fraud_control.inferenceservice import isvc
from fraud_control.inferenceservice.isvc import CONTRACT_ANNOTATION


def conditions_of(obj: dict) -> list[dict]:
    return obj.get("status", {}).get("conditions", [])


def is_true(obj: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions_of(obj))


def describe_conditions(conditions: list[dict]) -> str:
    if not conditions:
        return "no conditions reported yet"
    parts = []
    for c in conditions:
        detail = ": ".join(x for x in (c.get("reason", ""), c.get("message", "")) if x)
        parts.append(f"{c.get('type')}={c.get('status')}" + (f" ({detail})" if detail else ""))
    return "; ".join(parts)


def spec_observed(obj: dict, created_before: str | None = None) -> bool:
    """Has the controller acted on the object's current spec?

    `status.observedGeneration` alone cannot say: KServe copies it from a component's Knative
    Service (the transformer's, which a predictor patch leaves alone; kserve #6081), so after a
    traffic-only patch it never reaches `metadata.generation`. The predictor's status says it
    instead: the latest revision's share is `canaryTrafficPercent` (100 when unset), and when the
    template changed (`created_before` is the latest created revision before), a newer one exists.
    """
    st, predictor_spec = obj.get("status", {}), obj.get("spec", {}).get("predictor", {})
    if st.get("observedGeneration", 0) >= obj.get("metadata", {}).get("generation", 0):
        return True
    predictor = st.get("components", {}).get("predictor", {})
    percent = predictor_spec.get("canaryTrafficPercent")
    latest = [t.get("percent") for t in predictor.get("traffic", []) if t.get("latestRevision")]
    if latest != [100 if percent is None else percent]:
        return False
    return created_before is None or predictor.get("latestCreatedRevision", "") not in ("", created_before)


def traffic_status(obj: dict) -> dict:
    """The predictor's traffic state in KServe's own field names, plus what the spec asks for.

    `traffic` is `status.components.predictor.traffic` as KServe reports it. Works on any
    InferenceService dict (a cluster's, or the local runtime's state file).
    """
    metadata, spec, st = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    predictor = st.get("components", {}).get("predictor", {})
    generation, observed = metadata.get("generation", 0), st.get("observedGeneration", 0)
    return {
        "name": metadata.get("name", ""),
        "namespace": metadata.get("namespace", ""),
        "deploymentMode": isvc.deployment_mode(obj),
        "ready": is_true(obj, "Ready") and spec_observed(obj),
        "generation": generation,
        "observedGeneration": observed,
        "modelVersion": isvc.predictor_model_version(obj),
        "storageUri": isvc.predictor_storage_uri(obj),
        "featureContractId": metadata.get("annotations", {}).get(CONTRACT_ANNOTATION, ""),
        "canaryTrafficPercent": spec.get("predictor", {}).get("canaryTrafficPercent"),
        "latestCreatedRevision": predictor.get("latestCreatedRevision", ""),
        "latestReadyRevision": predictor.get("latestReadyRevision", ""),
        "latestRolledoutRevision": predictor.get("latestRolledoutRevision", ""),
        "previousRolledoutRevision": predictor.get("previousRolledoutRevision", ""),
        "traffic": predictor.get("traffic", []),
        "conditions": [{k: c[k] for k in ("type", "status", "reason", "message") if k in c}
                       for c in st.get("conditions", [])],
        "url": st.get("url", ""),
    }


def render_markdown(traffic: dict, action: str | None = None) -> str:
    """A Markdown report of `traffic_status(...)` for the KFP UI and the CLI."""
    current_spec_served = (traffic["ready"] and traffic["latestReadyRevision"]
                           and traffic["latestReadyRevision"] == traffic["latestCreatedRevision"])
    lines = [f"### InferenceService `{traffic['namespace']}/{traffic['name']}`", ""]
    if action:
        lines += [f"**{action}**", ""]
    lines += ["| revision | tag | traffic | serves |", "|---|---|---:|---|"]
    for target in traffic["traffic"]:
        revision = target.get("revisionName", "")
        if target.get("latestRevision"):
            serves = f"{traffic['modelVersion']} (spec)" if current_spec_served else "latest ready revision"
        elif revision == traffic["latestRolledoutRevision"]:
            serves = "rolled-out revision"
        else:
            serves = ""
        lines.append(f"| `{revision}` | {target.get('tag', '')} | {target.get('percent', 0)} % | {serves} |")
    if not traffic["traffic"]:
        lines.append("| (no traffic reported) | | | |")
    percent = traffic["canaryTrafficPercent"]
    lines += [
        "",
        f"- Ready: **{traffic['ready']}** (generation {traffic['generation']}, observed "
        f"{traffic['observedGeneration']}), deployment mode {traffic['deploymentMode'] or 'unknown'}",
        f"- spec: model {traffic['modelVersion']} from `{traffic['storageUri']}`, canaryTrafficPercent "
        f"{'unset (100 % to the latest ready revision)' if percent is None else percent}",
        f"- latestRolledoutRevision `{traffic['latestRolledoutRevision']}`, previousRolledoutRevision "
        f"`{traffic['previousRolledoutRevision']}`",
        f"- feature contract `{traffic['featureContractId']}`",
        f"- conditions: {describe_conditions(traffic['conditions'])}",
    ]
    return "\n".join(lines) + "\n"
