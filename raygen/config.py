"""Typed, strict loading of ``params.yaml``.

``params.yaml`` is the one source of hyper-parameters for Snakemake, DVC and the stage commands.
Its layout::

    profile: demo            # the one switch: demo | smoke | paper
    inputs: {...}            # where the pretrained parts live (paths; DVC deps of the stages using them)
    <stage>: {...}           # base values of each stage's section (the demo values)
    runtime:
      <stage>: {...}         # how a stage runs (workers, device, batch sizes that change no result)
    profiles:
      demo:  {<stage>: {...}, runtime: {<stage>: {...}}}   # overlays, deep-merged over the base
      smoke: {...}
      paper: {...}

Each stage owns a frozen dataclass and reads its section through :func:`load_section`: the scientific
values and the runtime values of that stage, merged. Snakemake and DVC track only the scientific part
(the stage's section and the active profile's overlay of it), so a runtime edit reruns nothing.
Unknown keys and wrong types raise :class:`ConfigError` naming the full key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from raygen.errors import UsageError

PROFILES = ("demo", "smoke", "paper", "rehearsal", "demo_weights", "demo_weights_decoder")
T = TypeVar("T")


class ConfigError(UsageError, ValueError):
    """A params file that does not match the stage's schema."""


def read_params(path: str | Path) -> dict[str, Any]:
    """Read the raw params file; a missing or non-mapping file is a :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    with path.open() as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively with ``overlay`` (neither is modified)."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_profile(raw: dict[str, Any], profile: str | None = None) -> str:
    """The active profile: the explicit argument, else the file's ``profile`` key, else ``demo``."""
    name = profile or raw.get("profile") or "demo"
    if name not in PROFILES:
        raise ConfigError(f"profile: unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return name


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a mapping, got {type(value).__name__}")
    return value


def scientific_section(raw: dict[str, Any], section: str, profile: str | None = None) -> dict[str, Any]:
    """The values of ``section`` that shape results: base values with the active profile's overlay."""
    name = resolve_profile(raw, profile)
    overlay = _mapping(
        _mapping(_mapping(raw.get("profiles"), "profiles").get(name), f"profiles.{name}").get(section),
        f"profiles.{name}.{section}",
    )
    return deep_merge(_mapping(raw.get(section), section), overlay)


def runtime_section(raw: dict[str, Any], section: str, profile: str | None = None) -> dict[str, Any]:
    """How ``section``'s stage runs (``runtime.<section>`` with the profile's overlay of it)."""
    name = resolve_profile(raw, profile)
    base = _mapping(_mapping(raw.get("runtime"), "runtime").get(section), f"runtime.{section}")
    profile_runtime = _mapping(
        _mapping(_mapping(raw.get("profiles"), "profiles").get(name), f"profiles.{name}").get("runtime"),
        f"profiles.{name}.runtime",
    )
    return deep_merge(base, _mapping(profile_runtime.get(section), f"profiles.{name}.runtime.{section}"))


def section_dict(raw: dict[str, Any], section: str, profile: str | None = None) -> dict[str, Any]:
    """What a stage reads: its scientific values and its runtime values, merged.

    A key may live in one of the two places only (runtime settings are tracked by neither Snakemake nor
    DVC, so a result-shaping key hidden there would rerun nothing when edited).
    """
    science = scientific_section(raw, section, profile)
    runtime = runtime_section(raw, section, profile)
    _check_disjoint(science, runtime, section)
    return deep_merge(science, runtime)


def _check_disjoint(science: dict[str, Any], runtime: dict[str, Any], prefix: str) -> None:
    for key, value in runtime.items():
        if key not in science:
            continue
        if isinstance(value, dict) and isinstance(science[key], dict):
            _check_disjoint(science[key], value, f"{prefix}.{key}")
        else:
            raise ConfigError(
                f"{prefix}.{key} is set both as a result-shaping value and under runtime.{prefix}; keep it in one place"
            )


def check_cpu_threads(section: str, cpu_threads: int) -> None:
    """A stage's ``runtime.<section>.cpu_threads``: 0 (the launcher's count) or a positive thread count."""
    if cpu_threads < 0:
        raise ValueError(f"{section}.cpu_threads must be >= 0 (0: the launcher's), got {cpu_threads}")


def load_section(path: str | Path, section: str, cls: type[T], profile: str | None = None) -> T:
    """Load ``section`` of the params file at ``path`` into the frozen dataclass ``cls``."""
    return load_stage_params(path, section, cls, profile)[1]


def load_stage_params(path: str | Path, section: str, cls: type[T], profile: str | None = None) -> tuple[str, T]:
    """The active profile name and ``section`` loaded into ``cls``, from one read of the file, after the whole
    profile passed :func:`raygen.pipeline.check_params.check_profile` (every section and the cross-stage rules)."""
    from raygen.pipeline.check_params import check_profile  # imports every stage's params: not at module level

    raw = read_params(path)
    name = resolve_profile(raw, profile)
    checked = check_profile(raw, name)
    if isinstance(checked.get(section), cls):  # a stage's own section: the check already built it
        return name, checked[section]
    return name, from_dict(cls, section_dict(raw, section, name), prefix=section)


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = ", ".join(f"{prefix}.{k}" if prefix else k for k in unknown)
        raise ConfigError(f"unknown params key(s): {names}; known keys: {', '.join(sorted(fields))}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(hints[name], value, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:  # a required field is missing, or __post_init__ refused a value
        # Checks that already name their key ("vqgan.steps must ...") keep it; others get the section.
        named = str(err).startswith(f"{prefix}.") if prefix else True
        raise ConfigError(str(err) if named else f"{prefix}: {err}") from err


def to_dict(obj: Any) -> Any:
    """A dataclass (possibly nested) as plain YAML/JSON-friendly values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """``value`` checked (and where needed converted) against the type hint ``tp``; errors name ``key``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(tp, value, key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, get_args(tp)))}")
        return value
    if origin in (list, tuple):
        return _coerce_sequence(tp, value, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        args = get_args(tp)
        vt = args[1] if args else Any
        return {k: _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key)
    return _coerce_scalar(tp, value, key)


def _coerce_union(tp: Any, value: Any, key: str) -> Any:
    """The first member of ``Optional[...]`` / ``A | B`` that accepts ``value``."""
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(arg, value, key)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")


def _coerce_sequence(tp: Any, value: Any, key: str) -> Any:
    """A ``list[...]``, ``tuple[X, ...]`` or fixed-length ``tuple[X, Y]``."""
    origin, args = get_origin(tp), get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {type(value).__name__} ({value!r})")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    item = args[0] if args else Any
    items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _coerce_scalar(tp: Any, value: Any, key: str) -> Any:
    """bool, int, float (ints accepted), str, other classes by isinstance; never a bool for a number."""
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value
