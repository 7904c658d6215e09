"""The OpenAPI document tells the truth about errors: RFC 9457 problem JSON, not FastAPI's shape.

FastAPI documents every 422 as ``application/json`` ``HTTPValidationError`` (``{"detail":
[...]}``), but ``webhooks.problems`` answers ``application/problem+json`` with ``errors``. A
client generated from the schema, or schemathesis checking responses against it, would be
misled; so the generated document is rewritten once: each 422's JSON content becomes the
``Problem`` schema under the problem media type (other media types a route declares, such as
the HTML page of a browser form post, are kept), and every operation taking a body documents
the 400 and 413 problems any body can get (unless the route documents its own); every operation
with a path or query parameter documents the 400 a NUL in one of them gets.

The admin API's ``cursor`` parameters get the pattern of the cursors it makes (``id:<digits>``
in unpadded URL-safe base64, up to 18 digits), so a client, or schemathesis, knows which strings
are cursors: anything else is a 422, and the pattern says so.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from webhooks.problems import PROBLEM_JSON

__all__ = ["CURSOR_PATTERN", "PROBLEM_SCHEMA", "document_problems"]

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; some errors add fields (`errors`, `checks`).",
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "required": ["type", "title", "status"],
    "additionalProperties": True,
}
_REF = {"$ref": "#/components/schemas/Problem"}
# base64 of "id:" is "aWQ6"; each 3 ASCII digits then make 4 characters from these sets (the
# first two depend on each other: a digit is 0x30-0x39), 2 or 1 trailing digits 3 or 2.
_TWO_DIGITS = r"(?:[MN][DTjz]|O[DT])[AEIMQUYcgk]"
_THREE_DIGITS = _TWO_DIGITS + "[w-z0-5]"
#: what ``webhooks.admin._common.encode_cursor`` makes of ids of 1 to 18 digits, and only that
CURSOR_PATTERN = (
    rf"^aWQ6(?:{_THREE_DIGITS}){{0,5}}(?:{_THREE_DIGITS}|{_TWO_DIGITS}|[MN][AQgw]|O[AQ])$"
)
_CURSOR_SCHEMA = {
    "type": "string",
    "pattern": CURSOR_PATTERN,
    "maxLength": 28,
    "description": "the next_cursor of the previous page, as the API returned it",
}
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
#: What any operation with a body may answer, whatever its route says: FastAPI's parser refuses
#: a body that is not JSON (400) and the operations middleware caps every body (413).
_BODY_ERRORS = {
    "400": "the body cannot be read (not JSON, not UTF-8)",
    "413": "the body is larger than DRIP_MAX_BODY_BYTES (or the route's own limit)",
}


_NUL_ERROR = "a path or query parameter carries a NUL character"


#: a string parameter's pattern where the route gives none: anything but NUL
_NO_NUL = "^[^\\u0000]*$"


def _refuse_nul(schema: dict[str, Any]) -> None:
    """Say in a string parameter's schema that it cannot hold NUL (the 400 above)."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "array":
            _refuse_nul(option.get("items", {}))
        elif option.get("type") == "string" and not {"pattern", "format"} & option.keys():
            option["pattern"] = _NO_NUL


def document_problems(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _rewrite(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _rewrite(schema: dict[str, Any]) -> None:
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "query" and parameter.get("name") == "cursor":
                    parameter["schema"] = dict(_CURSOR_SCHEMA)
            for parameter in operation.get("parameters", []):
                if parameter.get("in") in ("query", "path"):
                    _refuse_nul(parameter.get("schema", {}))
            if any(p.get("in") in ("query", "path") for p in operation.get("parameters", [])):
                # the operations middleware refuses a NUL in the path or query for every route
                operation.setdefault("responses", {}).setdefault(
                    "400",
                    {"description": _NUL_ERROR, "content": {PROBLEM_JSON: {"schema": _REF}}},
                )
            if "requestBody" in operation:
                responses = operation.setdefault("responses", {})
                for status, text in _BODY_ERRORS.items():
                    responses.setdefault(
                        status, {"description": text, "content": {PROBLEM_JSON: {"schema": _REF}}}
                    )
            answer = operation.get("responses", {}).get("422")
            if answer is None:
                continue
            content: dict[str, Any] = answer.setdefault("content", {})
            json_content = content.get("application/json", {})
            if json_content.get("schema", {}).get("$ref") == _FASTAPI_422:
                del content["application/json"]
            content[PROBLEM_JSON] = {"schema": _REF}
    schemas = schema["components"]["schemas"]
    if _FASTAPI_422 not in str(schema.get("paths")):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
