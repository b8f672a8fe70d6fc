"""The start-a-job form: fields built from a blueprint's pydantic ``input_model``, else a JSON editor.

Parsing keeps what the operator typed, so a refused form comes back filled in with each error
next to its field (pydantic's errors by field, JSON syntax errors with line and column).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from multidict import MultiMapping
from pydantic import ValidationError

from avtomatika.api.requests import BadJson, decode_json
from avtomatika.blueprint import StateMachineBlueprint

#: Name of the JSON editor's field (and of the errors that are not about one field).
JSON_FIELD = "initial_data"


@dataclass(slots=True)
class FormField:
    """One input of the start form."""

    name: str
    label: str
    kind: str  # text | integer | number | checkbox | select | json
    required: bool = False
    value: str = ""
    checked: bool = False
    choices: list[str] = field(default_factory=list)
    help: str = ""
    error: str | None = None


@dataclass(slots=True)
class StartForm:
    """The form, as shown: fields (or None for the JSON editor), values and errors."""

    blueprint: str
    fields: list[FormField] | None
    json_text: str = "{}"
    errors: dict[str, str] = field(default_factory=dict)
    #: Where the JSON editor's first text comes from (the blueprint's example, or the keys its code reads).
    hint: str = ""

    @property
    def json_error(self) -> str | None:
        return self.errors.get(JSON_FIELD)

    def to_json(self) -> dict[str, Any]:
        listed = [{"name": f.name, "kind": f.kind, "required": f.required} for f in self.fields or []]
        kind = "model" if self.fields is not None else "json"
        found: dict[str, Any] = {"kind": kind, "fields": listed, "errors": self.errors, "hint": self.hint}
        if self.fields is None:
            found["example"] = json.loads(self.json_text) if not self.errors else None
        return found


def _resolve(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """The property schema with ``$ref`` followed and ``X | None`` unwrapped."""
    if "$ref" in schema:
        schema = {
            **definitions.get(schema["$ref"].rsplit("/", 1)[-1], {}),
            **{k: v for k, v in schema.items() if k != "$ref"},
        }
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:
        schema = {**_resolve(options[0], definitions), **{k: v for k, v in schema.items() if k != "anyOf"}}
    return schema


def _kind(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "select"
    return {"string": "text", "integer": "integer", "number": "number", "boolean": "checkbox"}.get(
        str(schema.get("type")), "json"
    )


def _shown(kind: str, value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, indent=2) if kind == "json" else str(value)


def model_fields(model: Any) -> list[FormField]:
    """One field per property of the model's JSON schema."""
    schema = model.model_json_schema()
    definitions = schema.get("$defs", {})
    required = set(schema.get("required", []))
    found = []
    for name, prop in schema.get("properties", {}).items():
        resolved = _resolve(prop, definitions)
        kind = _kind(resolved)
        default = resolved.get("default")
        found.append(
            FormField(
                name=name,
                label=str(resolved.get("title") or name),
                kind=kind,
                required=name in required,
                value=_shown(kind, default),
                checked=bool(default) if kind == "checkbox" else False,
                choices=[str(c) for c in resolved.get("enum", [])],
                help=str(resolved.get("description") or ""),
            )
        )
    return found


def start_form(blueprint: StateMachineBlueprint) -> StartForm:
    """A new form for ``blueprint``: its input model's fields; else a JSON editor holding its
    ``input_example``, or the keys its handlers read from ``initial_data`` (with the values the code
    suggests), so an operator sees what the blueprint expects."""
    if blueprint.input_model is not None:
        return StartForm(blueprint.name, model_fields(blueprint.input_model))
    if blueprint.input_example is not None:
        return StartForm(blueprint.name, None, _pretty(blueprint.input_example), hint="The blueprint's example input.")
    keys = blueprint.input_keys()
    if not keys:
        return StartForm(blueprint.name, None, hint="Its handlers read nothing from initial_data.")
    hint = (
        f"The keys its handlers read from initial_data ({', '.join(keys)}), with the values their code "
        "compares them to or defaults them to: fill in your own."
    )
    return StartForm(blueprint.name, None, _pretty(keys), hint=hint)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def parse_start(
    blueprint: StateMachineBlueprint, posted: MultiMapping[Any], max_depth: int
) -> tuple[dict[str, Any], StartForm]:
    """The initial data a posted form asks for, and the form refilled with it (errors set if unreadable).

    JSON is read by the API's parser, within ``max_depth`` (``MAX_JSON_DEPTH``), so the studio accepts
    what the API accepts.
    """
    form = start_form(blueprint)
    if form.fields is None:
        form.json_text = str(posted.get(JSON_FIELD, "{}"))
        try:
            data = decode_json(form.json_text or "{}", max_depth=max_depth)
        except BadJson as exc:
            form.errors[JSON_FIELD] = f"Initial data is {exc}"
            return {}, form
        if not isinstance(data, dict):
            form.errors[JSON_FIELD] = "Initial data must be a JSON object ({...})."
            return {}, form
        return data, form
    data: dict[str, Any] = {}
    for item in form.fields:
        raw = posted.get(item.name)
        if item.kind == "checkbox":
            item.checked = raw is not None
            data[item.name] = item.checked
            continue
        item.value = str(raw or "")
        if not item.value.strip():
            continue  # left empty: the model's default, or its "field required" error
        if item.kind == "json":
            try:
                data[item.name] = decode_json(item.value, max_depth=max_depth - 1)
            except BadJson as exc:
                form.errors[item.name] = item.error = f"This is {exc}"
        else:
            data[item.name] = item.value
    return data, form


def refused(form: StartForm, exc: ValidationError) -> StartForm:
    """``form`` with pydantic's errors placed next to their fields."""
    names = {f.name: f for f in form.fields or []}
    for error in exc.errors(include_url=False, include_input=False):
        location = [str(p) for p in error["loc"]]
        target = names.get(location[0]) if location else None
        where = ".".join(location)
        message = error["msg"] if target is not None or not where else f"{where}: {error['msg']}"
        if target is not None:
            target.error = target.error or message
            form.errors.setdefault(target.name, message)
        else:
            form.errors[JSON_FIELD] = "; ".join(filter(None, [form.errors.get(JSON_FIELD), message]))
    return form
