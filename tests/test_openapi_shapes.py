"""/docs documents real shapes: every JSON answer of the resources in ``TAGS`` names its fields
(a model) instead of an open ``dict[str, Any]``. (Lookup's answers belong to the lookup room.)"""

from __future__ import annotations

from typing import Any

import pytest

from api.main import create_app

TAGS = {"incidents", "planning", "circles", "layers", "auth", "open311"}


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def _open(schema: dict[str, Any], spec: dict[str, Any]) -> bool:
    """True when ``schema`` says no more than 'some object' or 'anything'."""
    schema = _resolve(schema, spec)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return any(_open(s, spec) for s in schema[key] if s.get("type") != "null")
    if schema.get("type") == "array":
        return _open(schema.get("items", {}), spec)
    if schema.get("type") in ("string", "integer", "number", "boolean"):
        return False
    return not schema.get("properties")


SPEC = create_app().openapi()


def _json_answers(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for item in spec["paths"].values():
        for op in item.values():
            if not set(op.get("tags", ())) & TAGS:
                continue
            for status, answer in op["responses"].items():
                body = answer.get("content", {}).get("application/json")
                if status.startswith("2") and body is not None:
                    out.append((op["operationId"], body["schema"]))
    return out


@pytest.mark.parametrize("operation, schema", _json_answers(SPEC),
                         ids=[op for op, _ in _json_answers(SPEC)])
def test_answer_names_its_fields(operation: str, schema: dict[str, Any]) -> None:
    assert not _open(schema, SPEC), f"{operation} answers an undocumented object"


def test_an_open_object_is_caught() -> None:
    assert _open({"type": "object", "additionalProperties": True}, SPEC)
    assert _open({"type": "array", "items": {"type": "object"}}, SPEC)
