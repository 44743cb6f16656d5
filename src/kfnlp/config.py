"""Typed configuration: dataclasses built from YAML files and ``--set`` overrides.

Config flows one way: defaults -> YAML file -> ``--set key=value`` -> one validated
object. Every problem is reported as a :class:`ConfigError` naming the key (and the
file), the bad value and what was expected.

Each config field describes itself in its metadata (declared with :func:`option`): its
help, which the generated docs show, and optionally its kind (a model reference, a
corpus source), which the checks before a run and the container runner look for.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from kfnlp.errors import ConfigError

T = TypeVar("T")
SHOWN_CHARACTERS = 200  # how much of a value an error message echoes
SEED_MAX = 2**32 - 1  # numpy's and torch's seeding take 0 to 2**32 - 1
MAX_YAML_NODES = 100_000  # a config holds hundreds; more, counting each alias as what it repeats, is refused
TRUE = {"true", "yes", "on", "1"}
FALSE = {"false", "no", "off", "0"}
# what a field's value names, for the fields whose value is an input to load
Kind = Literal["model", "source", "ner_source", "cls_source"]


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    kind: Kind | None = None,
    sequence_length: bool = False,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A config field with its help (and kind) in its metadata, as transformers' argument dataclasses do.
    ``sequence_length``: the value is a count of tokens per model input, special tokens included, which
    the model's position embeddings bound (checked before a run: :func:`sequence_length_fields`)."""
    if not help:
        raise TypeError("a config option needs its help text")
    metadata = {
        "help": help,
        **({"kind": kind} if kind else {}),
        **({"sequence_length": True} if sequence_length else {}),
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def fields_of_kind(config: Any, *kinds: Kind, prefix: str = "") -> Iterator[tuple[str, Any, Kind]]:
    """(dotted key, value, kind) of every field of one of ``kinds`` in ``config`` and its sections,
    in declaration order."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from fields_of_kind(value, *kinds, prefix=f"{prefix}{f.name}.")
        elif f.metadata.get("kind") in kinds:
            yield f"{prefix}{f.name}", value, f.metadata["kind"]


def sequence_length_fields(config: Any, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(dotted key, value) of every ``sequence_length`` field in ``config`` and its sections, in declaration order."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield from sequence_length_fields(value, prefix=f"{prefix}{f.name}.")
        elif f.metadata.get("sequence_length"):
            yield f"{prefix}{f.name}", value


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, cut to :data:`SHOWN_CHARACTERS` so that a huge value
    (a 50 MB string, a 100 KB ``--set``) still makes one readable line."""
    return bounded(repr(value))


def bounded(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class FieldError(ConfigError, ValueError):
    """A field's value is out of range: raised by a config's ``__post_init__`` with the field's name;
    :func:`build` prefixes the section, so that the message and the blamed line name the key. A
    KfnlpError (one line from the CLI, even for a config built directly) and a ValueError."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}", field)
        self.field = field
        self.problem = problem


def check_seed(value: int, field: str = "seed") -> None:
    """Refuse a seed the seeding functions would (numpy: 0 to 2**32 - 1)."""
    if not 0 <= value <= SEED_MAX:
        raise FieldError(field, f"expected an integer from 0 to 2**32 - 1 ({SEED_MAX}), got {shown(value)}")


def check_at_least(value: int | None, minimum: int, field: str) -> None:
    """Refuse a count below ``minimum`` (None: unset, allowed)."""
    if value is not None and value < minimum:
        raise FieldError(field, f"expected an integer >= {minimum}, got {value}")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in get_args(tp) if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in get_args(tp) else "")
    if origin is list:
        return f"a list of {_plural(get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of string keys to {_plural(get_args(tp)[1])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _plural(tp: Any) -> str:
    plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values", list: "lists"}
    return plural.get(tp) or _type_name(tp)


def _bool_hint(value: Any) -> str:
    if isinstance(value, bool):
        return " (YAML reads unquoted yes/no/on/off as true/false: quote the value)"
    return ""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (from YAML, JSON or a ``--set`` string) to type ``tp``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        is_null = value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~"))
        if is_null and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {shown(value)}", key)
    if origin is Literal:
        choices = get_args(tp)
        if not isinstance(value, bool) and value in choices:
            return value
        if isinstance(value, bool):  # YAML reads an unquoted no/yes as false/true
            word = "yes" if value else "no"
            if word in choices:
                return word
        if isinstance(value, str):  # from --set: match the choices' spelling
            for choice in choices:
                if value.strip().lower() == str(choice).lower():
                    return choice
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {shown(value)}{_bool_hint(value)}", key)
    if origin is list or tp is list:  # a bare list: any items, as given
        if isinstance(value, str):
            value = _parsed(value, "list", "[a, b]", key) if value.strip().startswith("[") else [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {shown(value)}", key)
        if tp is list:
            return list(value)
        return [_coerce(v, get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:  # dict[str, X]: string keys, each value coerced as X at key.KEY
        if isinstance(value, str) and value.strip().startswith("{"):
            value = _parsed(value, "mapping", "{a: 1}", key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {shown(value)}", key)
        for name in value:
            if not isinstance(name, str):
                raise ConfigError(f"{key}: expected string keys, got {shown(name)} (quote it)", key)
        return {name: _coerce(v, get_args(tp)[1], f"{key}.{name}") for name, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
            return value.strip().lower() in TRUE
        raise ConfigError(f"{key}: expected true/false, got {shown(value)}", key)
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {shown(value)}", key)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                if number.is_integer():
                    return int(number)
        raise ConfigError(f"{key}: expected an integer, got {shown(value)}", key)
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                # YAML's spelling of the non-finite numbers (refused below, with the others)
                number = {".nan": math.nan, ".inf": math.inf, "-.inf": -math.inf}.get(value.strip().lower())
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {shown(value)}", key)
        try:
            number = float(number)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):  # nan passes every `<` check, inf every `>`: no field wants either
            raise ConfigError(f"{key}: expected a finite number, got {shown(value)}", key)
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {shown(value)}{_bool_hint(value)}", key)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {tp}", key)  # pragma: no cover - programming error


def field_value(cls: type, name: str, value: Any, key: str) -> Any:
    """``value`` converted to the type of field ``name`` of dataclass ``cls`` as :func:`build` converts it
    (without the class's own checks); a ConfigError names ``key``."""
    return _coerce(value, get_type_hints(cls)[name], key)


def _parsed(text: str, kind: str, example: str, key: str) -> Any:
    """A list or mapping written in a ``--set`` string: JSON first (so that 1e-4 is a number, which
    YAML 1.1 reads as a string), then YAML (unquoted words)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or f"not a {kind}"
        raise ConfigError(f"{key}: expected a {kind} like {example}, got {shown(text)} ({problem})", key) from None


def build(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping of keys, got {shown(data)}", where or None)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown config key {prefix}{bounded(str(unknown[0]))}; "
            f"known keys{' in ' + where if where else ''}: {', '.join(sorted(fields))}",
            f"{prefix}{unknown[0]!s}",
        )
    kwargs = {name: _coerce(value, hints[name], f"{where}.{name}" if where else name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except FieldError as exc:
        key = f"{where}.{exc.field}" if where else exc.field
        raise ConfigError(f"{key}: {exc.problem}", key) from None
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}", where or None) from None


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def to_json(obj: Any) -> str:
    return json.dumps(to_dict(obj), sort_keys=True)


def from_json(cls: type[T], text: str, where: str = "", knobs: dict[str, Any] | None = None) -> T:
    """``cls`` from a stage's JSON parameter; ``knobs`` (a component's typed inputs named after fields of
    ``cls``; None: not given) win over the same keys of the JSON."""
    try:
        data = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where or cls.__name__}: not valid JSON: {exc}") from None
    if knobs and isinstance(data, dict):
        data = {**data, **{key: value for key, value in knobs.items() if value is not None}}
    return build(cls, data, where)


class _Refused(yaml.YAMLError):
    """A YAML document kfnlp will not read, with the mark of the node at fault (when there is one)."""

    def __init__(self, problem: str, mark: Any = None):
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark


class _ConfigLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            seen = first.setdefault((key.tag, key.value), key)
            if seen is not key:
                raise _Refused(
                    f"duplicate key {bounded(key.value)!r} (first at line {seen.start_mark.line + 1}); "
                    "give each key once",
                    key.start_mark,
                )
        return super().construct_mapping(node, deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int | None]) -> int:
    """Nodes in ``node`` counting every alias as the whole node it repeats (memoised: linear time)."""
    if id(node) in memo:
        size = memo[id(node)]
        if size is None:
            raise _Refused("an alias refers to its own anchor", node.start_mark)
        return size
    memo[id(node)] = None
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def load_yaml(text: str) -> Any:
    """Parse one YAML document of config: safe types only, no key twice in one mapping, and at most
    :data:`MAX_YAML_NODES` values counting what aliases repeat, checked before anything is built (a
    "billion laughs" document is refused in milliseconds). Raises ``yaml.YAMLError``."""
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_NODES:
            raise _Refused(
                f"the document expands to {size:,} values through its aliases (*name), more than the "
                f"{MAX_YAML_NODES:,} a config may hold; write the values out instead"
            )
        return loader.construct_document(node)
    except RecursionError:
        raise _Refused("nested too deeply") from None
    except ValueError as exc:  # a scalar the constructor cannot convert (an integer of 5,000 digits)
        raise _Refused(f"cannot read a value: {bounded(str(exc).splitlines()[0])}") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping, with errors that name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level, got {type(data).__name__}")
    return data


def yaml_key_line(path: str | Path, key: str) -> int | None:
    """The 1-based line of dotted ``key`` in YAML file ``path`` (None if absent)."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8-sig"), Loader=_ConfigLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    line = None
    for part in key.split("."):
        name, _, indices = part.partition("[")  # a list item: name[i] (or name[i][j])
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == name:
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
        for index in indices.rstrip("]").split("][") if indices else ():
            if not (index.isdigit() and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value)):
                return line
            node = node.value[int(index)]
            line = node.start_mark.line + 1
    return line


def blame_file(exc: ConfigError, path: str | Path, section: str | None = None) -> ConfigError:
    """``exc`` reworded to start with ``FILE:LINE:`` for a key that file sets.

    ``section``: the file may hold only that section's keys (``kfnlp stage``)."""
    message = str(exc)
    name = str(Path(path))
    if message.startswith(name + ":"):
        return exc
    line = None
    if exc.key:
        line = yaml_key_line(path, exc.key)
        if line is None and section and exc.key.startswith(section + "."):
            line = yaml_key_line(path, exc.key[len(section) + 1 :])
    return ConfigError(f"{name}:{line}: {message}" if line else f"{name}: {message}", exc.key)


def _override_value(raw: str) -> Any:
    """A ``--set`` value: quoted -> the string inside; a JSON/YAML list or mapping ->
    that; anything else stays the raw string, which :func:`build` converts to the
    field's type (so ``no`` stays "no" for a string field and 007 stays "007")."""
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            value = load_yaml(text)
        except yaml.YAMLError:
            return raw
        return value if isinstance(value, str) else raw
    return raw


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested mapping (values stay strings;
    :func:`build` converts and checks them against the field types)."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or not key or not all(part.strip() for part in parts):
            raise ConfigError(f"--set {shown(item)}: expected KEY=VALUE, e.g. train_mlm.max_steps=100")
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {shown(item)}: {where} is a value, not a config section", where)
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(
                f"--set {shown(item)}: {key} is a config section; set one of its keys ({key}.KEY=VALUE)", key
            )
        node[parts[-1]] = _override_value(raw)
    return data


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
