"""The base of every config model (pipeline, training, generator), and the one way a config is read and checked.

A config is built from layers, defaults first: packaged defaults (a profile, a model's defaults or paper size),
then a user's YAML file, then overrides (command-line flags, code). Mappings merge key by key; anything else,
lists included, replaces. The merged tree is validated once against a frozen pydantic model whose unknown keys
are errors (``extra="forbid"``), so a typo never silently falls back to a default.

Reads: YAML files (:func:`read_yaml`) and mappings. Writes: nothing (:meth:`ConfigModel.to_yaml` returns the text).
Needs: pydantic and PyYAML only, so configs are checked before torch or an engine is imported.
Fails: :class:`ConfigError` (the command line's fault: the CLI prints it and exits 2), one line whose problems each
read ``SOURCE: KEY.PATH: PROBLEM`` for every config kind; SOURCE is the layer that set the key (a file's path,
``profile 'lite'``, ``overrides``...). An unknown key says ``unknown key`` and, when one is close, the known key
it may mean. A file that cannot be read or parsed names the file, and the line and column PyYAML stopped at.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key and the problem."""


class Layer(NamedTuple):
    """One source of config values; later layers win. ``source`` is how an error names it."""

    source: str
    data: Mapping[str, Any]
    is_file: bool = False


class ConfigModel(BaseModel):
    """A frozen config tree whose unknown keys are errors, hashed for lineage, caches and run folders."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def digest(self) -> str:
        """Stable hash of these settings: cache keys, lineage and checkpoints name a config by it."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        """The complete config as YAML, in field order (what output and run folders record)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_layers(cls, layers: Iterable[Layer]) -> Self:
        """Merge ``layers`` in order and validate the result once; every problem is named by the layer that set it."""
        layers = list(layers)
        data: dict[str, Any] = {}
        for layer in layers:
            data = deep_merge(data, layer.data)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError("; ".join(_describe(cls, err, layers) for err in exc.errors())) from None


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, neither changed: dicts merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> Layer:
    """A config file as a layer (an empty file sets nothing); ConfigError when unreadable or not a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: cannot read: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a YAML mapping, got {type(data).__name__}")
    return Layer(str(path), data, is_file=True)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's problem on one line (its own message spans several), with the line and column it stopped at."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError) and mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {f'{exc.context}, ' if exc.context else ''}{exc.problem}"
    return " ".join(str(exc).split())


def _describe(cls: type[BaseModel], err: Any, layers: list[Layer]) -> str:
    """One validation problem as ``SOURCE: KEY.PATH: PROBLEM`` (no key path for a check of the whole config)."""
    path, owner = _key_path(cls, err["loc"])
    if err["type"] == "extra_forbidden":
        problem = "unknown key"
        close = difflib.get_close_matches(path[-1], list(owner.model_fields), n=1) if owner and path else []
        if close:
            problem += f" (did you mean '{close[0]}'?)"
    else:
        problem = err["msg"].removeprefix("Value error, ")
    parts = [_source(layers, path, cls), ".".join(path), problem]
    return ": ".join(p for p in parts if p)


def _key_path(cls: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[list[str], type[BaseModel] | None]:
    """pydantic's error location as the user writes the key (without the tag pydantic adds inside a tagged
    union, e.g. ``model.samuel.lr`` is ``model.lr``), and the model the last key was looked up in."""
    path: list[str] = []
    node: Any = cls
    tag_field: str | None = None
    owner: type[BaseModel] | None = None
    for part in loc:
        models = _models(node)
        if isinstance(part, str) and tag_field and len(models) > 1:
            tagged = [m for m in models if tag_field in m.model_fields and m.model_fields[tag_field].default == part]
            if tagged:
                node, tag_field = tagged[0], None
                continue
        owner = models[0] if len(models) == 1 else None
        path.append(str(part))
        if owner is not None and isinstance(part, str) and part in owner.model_fields:
            field = owner.model_fields[part]
            node, tag_field = field.annotation, field.discriminator if isinstance(field.discriminator, str) else None
        else:
            node, tag_field = (_items(node) if isinstance(part, int) else None), None
    return path, owner


def _models(node: Any) -> list[type[BaseModel]]:
    """The config models an annotation allows (through Optional, unions and Annotated)."""
    origin = typing.get_origin(node)
    if origin is None:
        return [node] if isinstance(node, type) and issubclass(node, BaseModel) else []
    if origin is typing.Annotated:
        return _models(typing.get_args(node)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(node) for m in _models(arg)]
    return []


def _items(node: Any) -> Any:
    """The element annotation of a list or tuple annotation (through Optional); None for anything else."""
    origin = typing.get_origin(node)
    if origin is typing.Annotated:
        return _items(typing.get_args(node)[0])
    if origin in (typing.Union, types.UnionType):
        found = [i for i in (_items(a) for a in typing.get_args(node)) if i is not None]
        return found[0] if found else None
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(node)
        return args[0] if args else None
    return None


def _source(layers: list[Layer], path: list[str], cls: type[BaseModel]) -> str:
    """The layer to fix: the last one whose value reaches furthest along ``path`` in the merged tree (a list or
    scalar replaces, so everything under it is that layer's); for a problem no layer's keys locate (a check of
    the whole config), the last file, else the last layer that sets anything."""
    best, reach = None, 0
    for layer in reversed(layers):
        depth, owns = _reach(layer.data, path)
        if owns:
            return layer.source
        if depth > reach:
            best, reach = layer, depth
    if best is not None:
        return best.source
    for pick in ([layer for layer in layers if layer.is_file], [layer for layer in layers if layer.data], layers):
        if pick:
            return pick[-1].source
    return f"{cls.__name__} defaults"


def _reach(data: Any, path: list[str]) -> tuple[int, bool]:
    """How many keys of ``path`` the mapping ``data`` sets, and whether its value there survives any earlier
    layer's: it sets the whole path, or a list or scalar on the way (merging replaces those whole)."""
    for depth, part in enumerate(path):
        if depth and not isinstance(data, Mapping):
            return depth, True
        if not isinstance(data, Mapping) or part not in data:
            return depth, False
        data = data[part]
    return len(path), bool(path)
