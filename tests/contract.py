"""Check JSON bodies against the official V3 contracts (Swagger 2.0), strictly.

``validate("Contacts", body)`` builds a JSON Schema from the contract's ``definitions`` in which every
object schema gets ``additionalProperties: false`` (undeclared properties fail), and checks the formats
``date-time`` (RFC 3339 with an offset), ``date`` and ``uuid`` (canonical lowercase) strictly.
``parameters("/contacts")`` lists an operation's declared query parameters and their enum values.

Two contracts: "contacts" (``v3-contacts-subset.swagger.yaml``) and "campaigns" (``v3-campaign-reports-
subset.swagger.yaml``: email campaigns and campaign reports). ``validate`` and ``parameters`` take
``contract="campaigns"`` to choose; without it a definition is looked up in the contacts contract first, then
in the campaigns one (the definitions both hold are identical), and a path likewise.
``validate(..., strings_for_integers=("UniqueEmailCounts",))`` also accepts decimal strings where those
definitions declare integers: the developer guide's examples of the summaries report show counts as strings.

Each contract is read from its environment variable if set (``$CCOPTOUT_CONTRACT``,
``$CCOPTOUT_CAMPAIGN_CONTRACT``), else from ``shared/cc-api`` beside the project, else from the copy in
``tests/data``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CONTRACT_ENV = "CCOPTOUT_CONTRACT"
CONTRACT_NAME = "v3-contacts-subset.swagger.yaml"
CAMPAIGN_CONTRACT_ENV = "CCOPTOUT_CAMPAIGN_CONTRACT"
CAMPAIGN_CONTRACT_NAME = "v3-campaign-reports-subset.swagger.yaml"
CONTRACTS = {"contacts": (CONTRACT_NAME, CONTRACT_ENV), "campaigns": (CAMPAIGN_CONTRACT_NAME, CAMPAIGN_CONTRACT_ENV)}
"""Contract name -> (file name, environment variable that overrides its path)."""
_SCHEMA_KEYWORDS_WITHOUT_SUBSCHEMAS = {"enum", "default", "required", "type", "format", "pattern"}
_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class ContractError(AssertionError):
    """A body that the contract does not allow."""


def contract_path(name: str = "contacts") -> Path:
    """Where the contract ``name`` ("contacts" or "campaigns") is read from."""
    file_name, env = _known(name)
    if os.environ.get(env):
        return Path(os.environ[env])
    shared = Path(__file__).resolve().parents[1].parent / "shared/cc-api" / file_name
    if shared.is_file():
        return shared
    return Path(__file__).resolve().parent / "data" / file_name


@cache
def contract(name: str = "contacts") -> dict[str, Any]:
    """The parsed Swagger document of the contract ``name``."""
    with contract_path(name).open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def validate(
    definition_name: str,
    body: Any,
    contract: str | None = None,
    *,
    strings_for_integers: Iterable[str] = (),
) -> None:
    """Raise ContractError, listing every mismatch, unless ``body`` is a valid ``definition_name``.

    ``contract``: "contacts" or "campaigns"; None: the first of them that defines ``definition_name`` (and those of
    ``strings_for_integers``).
    ``strings_for_integers``: definitions whose integer properties may also be strings of decimal digits.
    """
    lenient = frozenset(strings_for_integers)
    name = contract if contract is not None else _holder(definition_name, *lenient)
    validator = _validator(name, definition_name, lenient)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at {_where(e)}: {e.message}" for e in errors[:20]]
        if len(errors) > 20:
            lines.append(f"  ... and {len(errors) - 20} more")
        raise ContractError(f"body is not a valid {definition_name}:\n" + "\n".join(lines))


def parameters(path: str, method: str = "get", contract: str | None = None) -> dict[str, tuple[str, ...]]:
    """Declared query parameters of an operation: name -> enum values (empty if not an enum).

    ``contract``: as for ``validate``; None: the first contract that declares ``path``.
    """
    names = [contract] if contract is not None else list(CONTRACTS)
    for name in names:
        doc = _document(name)
        base = doc.get("basePath", "")
        key = path[len(base) :] if base and path.startswith(base + "/") else path
        operation = doc["paths"].get(key, {}).get(method.lower())
        if operation is not None:
            params = operation.get("parameters", [])
            return {p["name"]: tuple(p.get("enum", ())) for p in params if p.get("in") == "query"}
    raise KeyError(f"the contract has no {method.upper()} {path}")


def _known(name: str) -> tuple[str, str]:
    if name not in CONTRACTS:
        raise KeyError(f"no contract named {name!r}: the contracts are {', '.join(CONTRACTS)}")
    return CONTRACTS[name]


_document = contract  # ``validate`` and ``parameters`` have an argument named contract


def _holder(*definition_names: str) -> str:
    """The first contract that defines every one of ``definition_names`` (KeyError if none)."""
    for name in CONTRACTS:
        if all(d in _document(name)["definitions"] for d in definition_names):
            return name
    raise KeyError(f"no contract defines {' and '.join(repr(d) for d in definition_names)}")


@cache
def _validator(name: str, definition_name: str, strings_for_integers: frozenset[str]) -> jsonschema.Draft4Validator:
    definitions = _document(name)["definitions"]
    if definition_name not in definitions:
        raise KeyError(f"the contract has no definition {definition_name!r}")
    unknown = strings_for_integers - set(definitions)
    if unknown:
        raise KeyError(f"the contract has no definition {sorted(unknown)[0]!r}")
    strict = _strict(definitions, "definitions")
    for lenient in strings_for_integers:
        strict[lenient] = _integers_or_digit_strings(strict[lenient])
    schema = {"$ref": f"#/definitions/{definition_name}", "definitions": strict}
    return jsonschema.Draft4Validator(schema, format_checker=_FORMATS)


def _integers_or_digit_strings(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with each integer property widened to an integer or a string of decimal digits."""
    properties = {
        prop: {**sub, "type": ["integer", "string"], "pattern": r"\A[0-9]+\Z"} if sub.get("type") == "integer" else sub
        for prop, sub in schema.get("properties", {}).items()
    }
    return {**schema, "properties": properties}


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
