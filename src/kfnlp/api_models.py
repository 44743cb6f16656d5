"""Kubernetes objects as the APIs' own Python models see them, shared by ``kfnlp deploy`` (KServe's
InferenceService) and the scale-out launcher (the Training Operator's PyTorchJob): a manifest built into the
generated models key by key, because their constructors take unknown keys silently; and the ``KEY[=VALUE][:EFFECT]``
toleration spelling of the config files."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(str, (.+)\)$")
_PRIMITIVES = {"str": (str,), "int": (int,), "bool": (bool,), "float": (float, int), "object": (object,)}
_STRINGS = {"ResourceQuantity"}  # a string in the API (kserve's overhead field is typed so)


def build(value: Any, type_name: str, model_class: Callable[[str], type], path: str = "") -> Any:
    """``value`` (a manifest, or part of one at ``path``) as an instance of the generated model ``type_name``
    (``model_class`` finds a model class by name); an unknown key, a wrong type or the model's own refusal
    (a required field, an enum) raises ValueError naming the path."""
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            raise ValueError(f"{path or '.'}: expected a list, got {type(value).__name__}")
        return [build(v, m.group(1), model_class, f"{path}[{i}]") for i, v in enumerate(value)]
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            raise ValueError(f"{path or '.'}: expected a mapping, got {type(value).__name__}")
        return {k: build(v, m.group(1), model_class, f"{path}.{k}") for k, v in value.items()}
    type_name = "str" if type_name in _STRINGS else type_name
    if type_name in _PRIMITIVES:
        if not isinstance(value, _PRIMITIVES[type_name]) or (type_name != "bool" and isinstance(value, bool)):
            raise ValueError(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return value
    cls = model_class(type_name)
    if not isinstance(value, dict):
        raise ValueError(f"{path or '.'}: expected an object ({type_name}), got {type(value).__name__}")
    by_json = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    unknown = sorted(set(value) - set(by_json))
    if unknown:
        raise ValueError(f"{path}.{unknown[0]}: unknown field of {type_name}")
    kwargs = {by_json[k]: build(v, cls.openapi_types[by_json[k]], model_class, f"{path}.{k}") for k, v in value.items()}
    try:
        return cls(**kwargs)  # the model's own checks: required fields, enums
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path or '.'}: {exc}") from None


def finder(*modules) -> Callable[[str], type]:
    """A ``model_class`` for :func:`build`: the first of ``modules`` (generated model packages) naming the class."""

    def model_class(name: str) -> type:
        for module in modules:
            cls = getattr(module, name, None)
            if cls is not None:
                return cls
        raise ValueError(f"no model {name}")

    return model_class


def parse_toleration(text: str) -> dict[str, str]:
    """``KEY[=VALUE][:EFFECT]`` as a Toleration's fields (no value: operator Exists)."""
    rest, _, effect = text.rpartition(":") if ":" in text else (text, "", "")
    key, eq, value = rest.partition("=")
    out = {"key": key, "operator": "Equal" if eq else "Exists"}
    if eq:
        out["value"] = value
    if effect:
        out["effect"] = effect
    return out
