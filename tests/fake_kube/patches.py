"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), as the API server applies them to
custom resources. Errors carry the wording of the API server's own messages."""
from __future__ import annotations

import copy


class PatchError(Exception):
    """A patch that cannot be applied (the API server answers 422)."""


def merge_patch(document, patch):
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(document) if isinstance(document, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer {path!r} must start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _parent(document, path: str, op: str):
    tokens = _tokens(path)
    if not tokens:
        raise PatchError(f"{op} operation does not apply: the whole document cannot be the target")
    node = document
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path!r}: missing value")
    return node, tokens[-1]


def _get(document, path: str, op: str):
    node = document
    for token in _tokens(path):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: {path!r}: missing value")
    return node


def _add(document, path: str, value, op: str = "add"):
    parent, key = _parent(document, path, op)
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        if key == "-":
            parent.append(value)
        elif key.isdigit() and int(key) <= len(parent):
            parent.insert(int(key), value)
        else:
            raise PatchError(f"{op} operation does not apply: index {key} out of range for {path!r}")
    else:
        raise PatchError(f"{op} operation does not apply: {path!r} is not inside an object or array")


def _remove(document, path: str, op: str = "remove"):
    parent, key = _parent(document, path, op)
    if isinstance(parent, dict) and key in parent:
        return parent.pop(key)
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent.pop(int(key))
    raise PatchError(f"error in {op} for path: {path!r}: Unable to remove nonexistent key: {key}: missing value")


def json_patch(document, operations: list) -> dict:
    """RFC 6902 add, remove, replace, move, copy, test; all or nothing."""
    result = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"invalid JSON patch operation {operation!r}: 'op' and 'path' are required")
        op, path = operation["op"], operation["path"]
        if op in ("add", "replace", "test") and "value" not in operation:
            raise PatchError(f"{op} operation at {path!r} has no value")
        value = copy.deepcopy(operation.get("value"))
        if op == "add":
            _add(result, path, value)
        elif op == "remove":
            _remove(result, path)
        elif op == "replace":
            _remove(result, path, "replace")
            _add(result, path, value, "replace")
        elif op in ("move", "copy"):
            source = operation.get("from")
            if source is None:
                raise PatchError(f"{op} operation at {path!r} has no 'from'")
            moved = _remove(result, source, op) if op == "move" else copy.deepcopy(_get(result, source, op))
            _add(result, path, moved, op)
        elif op == "test":
            if _get(result, path, op) != value:
                raise PatchError(f"testing value {path!r} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {op}")
    return result
