"""The forms the page draws, generated from hone's own dataclasses: the run config
(`hone.config.RunConfig`, one fieldset per section) and the advisor's questions
(`hone.plan.advise.Answers`). A key added to a dataclass appears in the page by itself,
with its default, its allowed values and the docstring written under it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from typing import Any, Literal

import yaml

from hone.config import RunConfig, load_config
from hone.errors import HoneError
from hone.model.methods import METHODS
from hone.plan.advise import Answers
from hone.plan.commands import QUESTIONS, build_answers
from hone.train.objectives import OBJECTIVES

# Keys whose allowed values are a registry's names, not a Literal: offered as suggestions.
SUGGESTIONS = {"adapter.method": lambda: sorted(METHODS), "train.objective": lambda: sorted(OBJECTIVES)}


def field_docs(cls) -> dict[str, str]:
    """The docstring written under each field of dataclass `cls` (attribute docstrings)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body, docs = tree.body[0].body, {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def describe_type(hint: Any) -> dict[str, Any]:
    """How the page edits a value of type `hint`: kind (bool, int, float, str, choice, list) and
    whether null is allowed; a union of a string and a list (target_modules) is edited as text."""
    origin, arms = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in arms if a is not type(None)]
        inner = describe_type(rest[0]) if len(rest) == 1 else {"kind": "yaml"}
        return {**inner, "nullable": type(None) in arms or inner.get("nullable", False)}
    if origin is Literal:
        return {"kind": "choice", "choices": list(arms), "nullable": False}
    if origin is list:
        return {"kind": "list", "nullable": False}
    kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(hint, "yaml")
    return {"kind": kind, "nullable": False}


def default_of(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None


def fields_of(cls, prefix: str = "") -> list[dict[str, Any]]:
    """One entry per field of `cls`: key, type description, default, range and doc."""
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    out = []
    for spec in dataclasses.fields(cls):
        key = f"{prefix}{spec.name}"
        allowed = spec.metadata.get("range")
        entry = {"key": key, "name": spec.name, **describe_type(hints[spec.name]), "default": default_of(spec),
                 "doc": docs.get(spec.name, ""), "range": allowed.describe() if allowed else None}
        if key in SUGGESTIONS:
            entry["suggestions"] = SUGGESTIONS[key]()
        out.append(entry)
    return out


def config_schema() -> list[dict[str, Any]]:
    """The run config's sections, in RunConfig's order, each with its fields."""
    hints = typing.get_type_hints(RunConfig)
    return [{"section": spec.name, "doc": class_doc(hints[spec.name]),
             "fields": fields_of(hints[spec.name], f"{spec.name}.")}
            for spec in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[spec.name])]


def class_doc(cls) -> str:
    """The class's own docstring (not the signature dataclasses write when it has none)."""
    doc = " ".join((cls.__doc__ or "").split())
    return "" if doc.startswith(f"{cls.__name__}(") else doc


def answers_schema() -> list[dict[str, Any]]:
    """The advisor's questions (`hone advise`), worded as the CLI asks them."""
    out = fields_of(Answers)
    for entry in out:
        entry["question"] = QUESTIONS.get(entry["name"], entry["doc"])
    return out


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """{"train.max_steps": 5} -> {"train": {"max_steps": 5}}."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def changed_only(values: dict[str, Any]) -> dict[str, Any]:
    """The keys of `values` ("section.key" -> value) that differ from RunConfig's defaults."""
    defaults = {f"{section}.{key}": value for section, fields in RunConfig().to_dict().items()
                if isinstance(fields, dict) for key, value in fields.items()}
    return {key: value for key, value in values.items() if key not in defaults or defaults[key] != value}


def config_from_form(values: dict[str, Any]):
    """(RunConfig, YAML text) from the form's flat values, checked as `hone train` checks a
    config file: an unknown key or a wrong type is the CLI's HoneError naming the key."""
    raw = nest(changed_only(values))
    config = load_config(None, base=raw)
    return config, yaml.safe_dump(raw, sort_keys=False) if raw else "# every key at its default\n"


def answers_from_form(values: dict[str, Any]) -> Answers:
    """Answers from the advisor form, checked as `hone advise --answers FILE` checks them (a
    dataset path is counted with hone's reader)."""
    return build_answers({k: v for k, v in values.items() if v is not None and v != ""})


def values_from_yaml(text: str) -> dict[str, Any]:
    """The form's flat values ("section.key" -> value) from YAML a user pasted, checked as a
    config file is checked (the error names the line of malformed YAML, or the key)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise HoneError(f"the YAML is malformed{where}: {getattr(exc, 'problem', None) or 'invalid YAML'}",
                        "fix the YAML syntax at that line") from None
    if not isinstance(raw, dict):
        raise HoneError("the YAML is not a mapping of sections (model:, data:, ...)", "start each section at the left margin")
    load_config(None, base=raw)  # the same checks as `hone train FILE`
    return {f"{section}.{key}": value for section, keys in raw.items() if isinstance(keys, dict) for key, value in keys.items()}
