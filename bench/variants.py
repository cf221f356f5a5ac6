"""Params variants for the tuning benches: ``key=value`` overrides written into a profile's overlay."""

from __future__ import annotations

from copy import deepcopy

import yaml


def parse_variant(text: str) -> dict[str, object]:
    """``"batch_size=16,augment.enabled=true"`` -> ``{"batch_size": 16, "augment.enabled": True}``; "" -> {}."""
    out = {}
    for item in filter(str.strip, text.split(",")):
        key, equals, value = item.partition("=")
        if not key.strip() or not equals:
            raise SystemExit(f"variant {text!r}: expected key=value[,key=value]")
        out[key.strip()] = yaml.safe_load(value)
    return out


def variant_name(text: str) -> str:
    """A folder name for a variant: ``"steps=8,cfg=5"`` -> ``"steps-8_cfg-5"``, "" -> ``"baseline"``."""
    return text.replace("=", "-").replace(",", "_") or "baseline"


def variant_params(raw: dict, profile: str, section: str, overrides: dict[str, object]) -> dict:
    """A params copy whose ``profile`` overlay of ``section`` carries ``overrides`` (dotted keys nest)."""
    copy = deepcopy(raw)
    overlay = copy.setdefault("profiles", {}).setdefault(profile, {})
    node_root = overlay[section] = overlay.get(section) or {}
    for key, value in overrides.items():
        node = node_root
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return copy
