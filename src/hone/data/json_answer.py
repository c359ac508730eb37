"""JSON answers: parse a model's answer (a ```json fence allowed), compare its fields with a
reference's, validate it against a JSON schema. Pure functions below the training layer:
evaluation's metrics and online RL's rewards both score answers with them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hone.errors import HoneError

FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


def parse_json(text: str):
    """The JSON value in `text` (a ```json fence around it is allowed), or raise ValueError."""
    text = text.strip()
    fenced = FENCE.match(text)
    return json.loads(fenced.group(1) if fenced else text)


def try_json(text: str):
    try:
        return True, parse_json(text)
    except ValueError:
        return False, None


def field_matches(prediction_value, reference: dict) -> dict[str, float]:
    """Per reference key: 1.0 when the prediction (a JSON object) has an equal value."""
    if not isinstance(prediction_value, dict):
        return {key: 0.0 for key in reference}
    return {key: float(key in prediction_value and _same(prediction_value[key], value)) for key, value in reference.items()}


def _same(a, b) -> bool:
    # Strings compare after trimming, so `"billing "` matches `"billing"`; everything else exactly.
    if isinstance(a, str) and isinstance(b, str):
        return a.strip() == b.strip()
    return a == b


def load_schema_validator(path: str | None):
    """A jsonschema validator for the schema file at `path` (None when no schema is given)."""
    if not path:
        return None
    import jsonschema

    file = Path(path)
    if not file.is_file():
        raise HoneError(f"schema file not found: {path}", "pass --schema a JSON-schema file")
    try:
        schema = json.loads(file.read_text())
    except ValueError as exc:
        raise HoneError(f"{path}: not valid JSON ({exc})", "fix the schema file") from None
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise HoneError(f"{path}: not a valid JSON schema: {exc.message}", "fix the schema file") from None
    return cls(schema)
