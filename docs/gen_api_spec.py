"""Render docs/API_SPEC.md from the app's own OpenAPI document, so the doc cannot drift.

    .venv/bin/python -m docs.gen_api_spec           # (re)write docs/API_SPEC.md
    .venv/bin/python -m docs.gen_api_spec --check   # exit 1 if the file on disk is stale

The app is built on a throw-away, freshly migrated SQLite file and the embedded Redis; no
server is needed. /api/v1/openapi.json is read through Flask's test client.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "API_SPEC.md"
API_PREFIX = "/api/v1"
TAG_ORDER = ["queue", "catalogue", "reservations", "payments", "jobs", "points", "admin", "operations"]
METHODS = ["get", "post", "put", "patch", "delete"]
CONSTRAINTS = [
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "format",
]
SECURITY = {
    "bearerAuth": "the signed-in user's JWT (`Authorization: Bearer <JWT>`)",
    "queueToken": "queue token (`X-Queue-Token` header)",
    "adminToken": "admin bearer token (`Authorization: Bearer $ADMIN_TOKEN`)",
}
REJECTED = "Unknown fields are rejected (400)."
HASH_PART = re.compile(r"^[0-9a-f]{7}$")  # spectree's module hash in component keys


def build_app(workdir: Path) -> Flask:
    """The real app, bound to a migrated temporary SQLite file and the in-process Redis."""
    from config.settings import Settings
    from models import schema
    from models.db import init_database
    from web import create_app

    settings = Settings().with_(
        database_url=f"sqlite:///{workdir / 'x.db'}", redis_url="embedded", auth_jwt_secret="docs", auth_dev_login=True
    )
    init_database(settings.database_url)
    schema.migrate()
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


def fetch_openapi(app: Flask) -> dict[str, Any]:
    """GET /api/v1/openapi.json through the test client."""
    response = app.test_client().get(f"{API_PREFIX}/openapi.json")
    if response.status_code != 200:
        raise RuntimeError(f"GET {API_PREFIX}/openapi.json answered {response.status_code}")
    document: dict[str, Any] = response.get_json()
    return document


# --- schema helpers ---------------------------------------------------------------------------
class Schemas:
    """The document's components, with readable names (spectree's module hash dropped)."""

    def __init__(self, components: dict[str, Any]) -> None:
        self.raw: dict[str, Any] = components
        short = {key: [p for p in key.split(".") if not HASH_PART.match(p)][-1] for key in components}
        counts: dict[str, int] = {}
        for name in short.values():
            counts[name] = counts.get(name, 0) + 1
        self.names = {key: name if counts[name] == 1 else key for key, name in short.items()}

    @staticmethod
    def key_of(ref: str) -> str:
        """The component key of a `#/components/schemas/...` reference."""
        return ref.rsplit("/", 1)[-1]

    def name(self, ref: str) -> str:
        """Readable name of a reference."""
        return self.names[self.key_of(ref)]

    def link(self, ref: str) -> str:
        """A markdown link to a schema in the Schemas section."""
        name = self.name(ref)
        return f"[`{name}`](#schema-{name.lower()})"

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A schema with a top-level $ref replaced by its component."""
        while "$ref" in schema:
            schema = self.raw[self.key_of(schema["$ref"])]
        return schema

    def refs(self, schema: Any) -> list[str]:
        """Every $ref inside a schema (depth-first, in order)."""
        found: list[str] = []
        if isinstance(schema, dict):
            if "$ref" in schema:
                found.append(schema["$ref"])
            for key in sorted(schema):
                found.extend(self.refs(schema[key]))
        elif isinstance(schema, list):
            for item in schema:
                found.extend(self.refs(item))
        return found

    def reachable(self, root: Any) -> set[str]:
        """Keys of every component reachable from a part of the document."""
        reached: set[str] = set()
        pending = self.refs(root)
        while pending:
            key = self.key_of(pending.pop())
            if key not in reached:
                reached.add(key)
                pending.extend(self.refs(self.raw[key]))
        return reached

    def type_of(self, schema: dict[str, Any]) -> str:
        """A short, readable type: `integer`, `array of X`, `"A" or "B"`, `string or null`."""
        if "$ref" in schema:
            return self.link(schema["$ref"])
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                return " or ".join(self.type_of(part) for part in schema[combinator])
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.type_of(schema["allOf"][0])
        if "enum" in schema:
            return " or ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
        if "const" in schema:
            return f"`{json.dumps(schema['const'])}`"
        kind = schema.get("type", "any")
        if isinstance(kind, list):
            return " or ".join(kind)
        if kind == "array":
            return f"array of {self.type_of(schema.get('items', {}))}"
        return str(kind)


def constraints_of(schema: dict[str, Any]) -> str:
    """`minimum: 1, maximum: 1000` and the default, collected through anyOf branches."""
    parts: list[str] = []
    branches = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
    for branch in branches:
        for key in CONSTRAINTS:
            if key in branch:
                parts.append(f"{key}: {json.dumps(branch[key])}")
        if branch.get("type") == "array" and isinstance(branch.get("items"), dict):
            parts.extend(f"items {p}" for p in constraints_of(branch["items"]).split(", ") if p)
    if "default" in schema:
        parts.append(f"default: {json.dumps(schema['default'])}")
    return ", ".join(parts)


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|") or " "


def field_table(schemas: Schemas, schema: dict[str, Any], closed: str = "No other fields.") -> list[str]:
    """Rows describing an object's fields (name, type, required, constraints, description)."""
    schema = schemas.resolve(schema)
    if schema.get("type") == "array":
        return [f"An array of {schemas.type_of(schema.get('items', {}))}.", ""]
    properties: dict[str, Any] = schema.get("properties", {})
    if not properties:
        return ["No fields.", ""]
    required = set(schema.get("required", []))
    lines = ["| field | type | required | constraints | description |", "|---|---|---|---|---|"]
    for name in sorted(properties):
        prop = properties[name]
        lines.append(
            f"| `{name}` | {cell(schemas.type_of(prop))} | {'yes' if name in required else 'no'} "
            f"| {cell(constraints_of(prop))} | {cell(prop.get('description', ''))} |"
        )
    if schema.get("additionalProperties") is False:
        lines += ["", closed]
    lines.append("")
    return lines


# --- sections ---------------------------------------------------------------------------------
def intro(document: dict[str, Any]) -> list[str]:
    """Title, conventions, security schemes and the error-code table."""
    from models.errors import CODES
    from web.errors import HTTP_CODES

    info = document.get("info", {})
    lines = [
        "# API specification",
        "",
        "<!-- Generated by `.venv/bin/python -m docs.gen_api_spec` from the app's own OpenAPI document",
        "     (GET /api/v1/openapi.json). Do not edit by hand: change the routes or web/schemas/ and",
        "     regenerate; tests/unit/test_docs.py fails when this file is stale. -->",
        "",
        f"{info.get('title', 'API')} {info.get('version', '')} (OpenAPI {document.get('openapi', '?')}).",
        "",
        "## Conventions",
        "",
        f"- Base path `{API_PREFIX}`; every path below includes it.",
        "- Request and response bodies are JSON (`application/json`) with camelCase field names;",
        "  unknown fields in a request body are rejected with 400.",
        "- Times are ISO 8601 UTC (`2025-01-01T12:00:00.000Z`); money and points are integers.",
        "- Ids are positive 64-bit integers; a path id that is not one is a 400.",
        "- Queue-gated calls carry the waiting-room token in the `X-Queue-Token` header; the",
        "  admin call carries `Authorization: Bearer $ADMIN_TOKEN`.",
        "- `Prefer: wait=N` (N ≤ 10) on `POST /reservations` and `POST /payments` waits up to N s for the",
        "  job and answers with its outcome (201 or the job's problem), else 202 with the job. The wait",
        "  is a preference (RFC 7240): when `PREFER_WAIT_SLOTS` requests of a web process already wait,",
        "  the request is answered 202 at once and the job's outcome is read from `GET /jobs/{jobId}`.",
        "- Errors are RFC 9457 `application/problem+json` bodies (schema [`Problem`](#schema-problem)):",
        "  `type`, `title`, `status`, `detail`, a machine-readable `code`, and `errors` (per-field) on",
        "  validation failures. A 500 never carries a stack trace.",
        "",
        "### Security schemes",
        "",
        "| name | kind | where |",
        "|---|---|---|",
    ]
    for name, scheme in sorted(document.get("components", {}).get("securitySchemes", {}).items()):
        kind = scheme.get("type", "")
        if scheme.get("scheme"):
            kind += f" ({scheme['scheme']})"
            where = f"`Authorization: {scheme['scheme'].capitalize()} <token>` header"
        else:
            where = f"`{scheme.get('name', '?')}` {scheme.get('in', 'header')}"
        lines.append(f"| `{name}` | {kind} | {where} |")
    lines += [
        "",
        "### Error codes",
        "",
        "From `models.errors.CODES` (the one code table; the domain errors are in `models/errors.py`):",
        "",
        "| code | HTTP status | Retry-After | raised when |",
        "|---|---|---|---|",
    ]
    for code, meaning in sorted(CODES.items(), key=lambda item: (item[1].status, item[0])):
        retry = f"yes, {meaning.retry_after} s by default" if meaning.retry_after else ""
        lines.append(f"| `{code}` | {meaning.status} | {retry} | {cell(_raised_when(code, meaning.title))} |")
    lines += [
        "",
        "Errors raised by the HTTP layer itself (`web.errors.HTTP_CODES`):",
        "",
        "| HTTP status | code |",
        "|---|---|",
    ]
    lines += [f"| {status} | `{code}` |" for status, code in sorted(HTTP_CODES.items())]
    lines.append("")
    return lines


def _raised_when(code: str, title: str) -> str:
    """The "Raised when ..." line of the most general domain error with this code (else its title)."""
    from models.errors import DomainError

    classes = [cls for cls in _subclasses(DomainError) if cls.code == code]
    if not classes:
        return title
    general = min(classes, key=lambda cls: len(cls.__mro__))
    return (general.__doc__ or title).strip().splitlines()[0].removeprefix("Raised when ").rstrip(".")


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def operation(schemas: Schemas, method: str, path: str, op: dict[str, Any]) -> list[str]:
    """One operation: summary, security, parameters, request body and responses."""
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [op["summary"], ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    names = sorted({name for requirement in op.get("security", []) for name in requirement})
    lines += [f"Security: {', '.join(SECURITY.get(n, f'`{n}`') for n in names) or 'none'}.", ""]

    parameters = sorted(op.get("parameters", []), key=lambda p: (p.get("in", ""), p.get("name", "")))
    if parameters:
        lines += ["Parameters:", "", "| name | in | type | required | constraints |", "|---|---|---|---|---|"]
        for p in parameters:
            schema = p.get("schema", {})
            lines.append(
                f"| `{p['name']}` | {p.get('in', '')} | {cell(schemas.type_of(schema))} "
                f"| {'yes' if p.get('required') else 'no'} | {cell(constraints_of(schema))} |"
            )
        lines.append("")

    body = op.get("requestBody")
    if body:
        for media in sorted(body.get("content", {})):
            schema = body["content"][media].get("schema", {})
            label = schemas.link(schema["$ref"]) if "$ref" in schema else schemas.type_of(schema)
            required = "required" if body.get("required") else "optional"
            lines += [f"Request body ({media}, {required}): {label}", ""]
            lines += field_table(schemas, schema, REJECTED)
            seen: set[str] = {schema.get("$ref", "")}
            for ref in schemas.refs(schemas.resolve(schema)):
                if ref in seen:
                    continue
                seen.add(ref)
                lines += [f"{schemas.link(ref)} (nested):", ""]
                lines += field_table(schemas, {"$ref": ref}, REJECTED)

    lines += ["Responses:", "", "| status | description | body |", "|---|---|---|"]
    for status in sorted(op.get("responses", {})):
        response = op["responses"][status]
        bodies = []
        for media in sorted(response.get("content", {})):
            schema = response["content"][media].get("schema", {})
            bodies.append(schemas.link(schema["$ref"]) if "$ref" in schema else schemas.type_of(schema))
        lines.append(f"| {status} | {cell(response.get('description', ''))} | {cell(', '.join(bodies)) or '—'} |")
    lines.append("")
    return lines


def operations(document: dict[str, Any], schemas: Schemas) -> list[str]:
    """Every operation, grouped by tag (TAG_ORDER first), sorted by path then method."""
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                op = item[method]
                tag = (op.get("tags") or ["untagged"])[0]
                by_tag.setdefault(tag, []).append((path, method, op))
    tags = [t for t in TAG_ORDER if t in by_tag] + sorted(t for t in by_tag if t not in TAG_ORDER)
    lines: list[str] = []
    for tag in tags:
        lines += [f"## {tag}", ""]
        for path, method, op in sorted(by_tag[tag], key=lambda x: (x[0], METHODS.index(x[1]))):
            lines += operation(schemas, method, path, op)
    return lines


def schema_section(document: dict[str, Any], schemas: Schemas) -> list[str]:
    """Every component schema the operations reach, by name."""
    paths = document.get("paths", {})
    reached = schemas.reachable(paths)
    bodies = [op.get("requestBody", {}) for item in paths.values() for op in item.values() if isinstance(op, dict)]
    request_keys = schemas.reachable(bodies)
    lines = ["## Schemas", ""]
    for key in sorted(reached, key=lambda k: schemas.names[k].lower()):
        component = schemas.raw[key]
        name = schemas.names[key]
        lines += [f'<a id="schema-{name.lower()}"></a>', "", f"### `{name}`", ""]
        if component.get("description"):
            lines += [" ".join(component["description"].split()), ""]
        lines += field_table(schemas, component, REJECTED if key in request_keys else "No other fields.")
    return lines


def unlisted_routes(app: Flask, document: dict[str, Any]) -> list[str]:
    """Routes of the app under the base path that the OpenAPI document does not describe."""
    described = {(path, method) for path, item in document.get("paths", {}).items() for method in item}
    rows: list[tuple[str, str, str]] = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        if not path.startswith(API_PREFIX):
            continue
        view = app.view_functions[rule.endpoint]
        summary = ((view.__doc__ or "").strip().splitlines() or [""])[0]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (path, method.lower()) not in described:
                rows.append((path, method, summary))
    if not rows:
        return []
    lines = [
        "## Routes outside the OpenAPI document",
        "",
        "Served by the app but not described by spectree (plain Flask views: documents, assets, metrics).",
        "",
        "| method, path | summary |",
        "|---|---|",
    ]
    lines += [f"| `{method} {path}` | {cell(summary)} |" for path, method, summary in sorted(rows)]
    lines.append("")
    return lines


def render() -> str:
    """The whole API_SPEC.md text."""
    with tempfile.TemporaryDirectory(prefix="gen_api_spec_") as workdir:
        app = build_app(Path(workdir))
        document = fetch_openapi(app)
        schemas = Schemas(document.get("components", {}).get("schemas", {}))
        lines = intro(document)
        lines += operations(document, schemas)
        lines += unlisted_routes(app, document)
        lines += schema_section(document, schemas)
        from models.db import db

        if not db.is_closed():
            db.close()
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write docs/API_SPEC.md, or with --check report whether it is up to date."""
    parser = argparse.ArgumentParser(prog="python -m docs.gen_api_spec", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/API_SPEC.md differs from the code")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(
                f"{OUTPUT.relative_to(ROOT)} is out of date; regenerate: .venv/bin/python -m docs.gen_api_spec",
                file=sys.stderr,
            )
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is up to date")
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
