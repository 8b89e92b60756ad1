"""Check JSON bodies against the official V3 contract (Swagger 2.0), strictly.

``validate("Contacts", body)`` builds a JSON Schema from the contract's ``definitions`` in which every
object schema gets ``additionalProperties: false`` (undeclared properties fail), and checks the formats
``date-time`` (RFC 3339 with an offset), ``date`` and ``uuid`` (canonical lowercase) strictly.
``parameters("/contacts")`` lists an operation's declared query parameters and their enum values.

The contract is read from ``$CCOPTOUT_CONTRACT`` if set, else from ``shared/cc-api`` beside the
project, else from the copy in ``tests/data``.
"""

from __future__ import annotations

import os
import re
from datetime import date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CONTRACT_ENV = "CCOPTOUT_CONTRACT"
CONTRACT_NAME = "v3-contacts-subset.swagger.yaml"
_SCHEMA_KEYWORDS_WITHOUT_SUBSCHEMAS = {"enum", "default", "required", "type", "format", "pattern"}
_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class ContractError(AssertionError):
    """A body that the contract does not allow."""


def contract_path() -> Path:
    """Where the contract is read from."""
    if os.environ.get(CONTRACT_ENV):
        return Path(os.environ[CONTRACT_ENV])
    shared = Path(__file__).resolve().parents[1].parent / "shared/cc-api" / CONTRACT_NAME
    if shared.is_file():
        return shared
    return Path(__file__).resolve().parent / "data" / CONTRACT_NAME


@cache
def contract() -> dict[str, Any]:
    """The parsed Swagger document."""
    with contract_path().open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def validate(definition_name: str, body: Any) -> None:
    """Raise ContractError, listing every mismatch, unless ``body`` is a valid ``definition_name``."""
    errors = sorted(_validator(definition_name).iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at {_where(e)}: {e.message}" for e in errors[:20]]
        if len(errors) > 20:
            lines.append(f"  ... and {len(errors) - 20} more")
        raise ContractError(f"body is not a valid {definition_name}:\n" + "\n".join(lines))


def parameters(path: str, method: str = "get") -> dict[str, tuple[str, ...]]:
    """Declared query parameters of an operation: name -> enum values (empty if not an enum)."""
    doc = contract()
    base = doc.get("basePath", "")
    key = path[len(base) :] if base and path.startswith(base + "/") else path
    try:
        operation = doc["paths"][key][method.lower()]
    except KeyError:
        raise KeyError(f"the contract has no {method.upper()} {path}") from None
    return {p["name"]: tuple(p.get("enum", ())) for p in operation.get("parameters", []) if p.get("in") == "query"}


@cache
def _validator(definition_name: str) -> jsonschema.Draft4Validator:
    definitions = contract()["definitions"]
    if definition_name not in definitions:
        raise KeyError(f"the contract has no definition {definition_name!r}")
    schema = {"$ref": f"#/definitions/{definition_name}", "definitions": _strict(definitions, "definitions")}
    return jsonschema.Draft4Validator(schema, format_checker=_FORMATS)


def _strict(node: Any, parent_key: str | None = None) -> Any:
    """Copy of the definitions with closed objects and Swagger-only keys removed."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    if parent_key in ("properties", "definitions"):  # a map of names to schemas
        return {name: _strict(schema) for name, schema in node.items()}
    if "$ref" in node:  # Swagger 2.0 / Draft 4: siblings of $ref (e.g. description) are ignored
        return {"$ref": node["$ref"]}
    schema = {
        key: value if key in _SCHEMA_KEYWORDS_WITHOUT_SUBSCHEMAS else _strict(value, key)
        for key, value in node.items()
        if key not in ("example", "description", "readOnly") and not key.startswith("x-")
    }
    if (schema.get("type") == "object" or "properties" in schema) and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


def _where(error: jsonschema.ValidationError) -> str:
    return "body" + "".join(f"[{p!r}]" for p in error.absolute_path)


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    match = _DATE_TIME.fullmatch(value)
    if not match:
        return False
    year, month, day, hour, minute, second, _fraction, offset = match.groups()
    try:
        tz = timezone.utc
        if offset != "Z":
            sign = -1 if offset[0] == "-" else 1
            tz = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6])))
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=tz)
    except ValueError:
        return False
    return True


@_FORMATS.checks("date")
def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    match = _DATE.fullmatch(value)
    if not match:
        return False
    try:
        date(*(int(g) for g in match.groups()))
    except ValueError:
        return False
    return True


@_FORMATS.checks("uuid")
def _is_uuid(value: object) -> bool:
    return not isinstance(value, str) or bool(_UUID.fullmatch(value))
