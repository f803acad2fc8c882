"""Tiny per-architecture configs that the smoke test resolves call-site arguments against.

Each ``<key>.json`` here mirrors one model family's Hugging Face config at toy size: few experts
(8 to 32), hidden size 64, expert intermediate size 32, but the same scoring function, expert
grouping, top-k (capped at the number of experts), correction bias, routed scaling and shared
experts as the real family. Fields:

``key``
    The model file stem it applies to (``deepseek_v2`` for ``models/deepseek_v2.py``).
``mirrors``
    Which released model it copies, and what was scaled down.
``aliases``, ``classes``
    Other file stems, and MoE class names, that use the same config (for forks and plugins that
    rename files).
``config``
    Hugging Face attribute names and their tiny values: what ``config.x`` reads.
``fallbacks``
    ``FusedMoE`` keyword values used when a call site's argument does not resolve. Merged over
    ``default.json``'s, which hold the generic defaults: vLLM's own ``FusedMoE`` defaults, plus
    8 experts, top-2, hidden 64, intermediate 32 for the four required sizes, and ``present``
    for module-valued arguments a call writes but the interpreter cannot follow.

``default.json`` is used for any file that matches no other config. Reading these files needs
nothing but the standard library.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import PurePosixPath
from typing import Mapping

#: Key of the config used when nothing else matches.
DEFAULT_KEY = "default"


@dataclass(frozen=True)
class TinyConfig:
    """One architecture's tiny config, as loaded from its JSON file."""

    key: str
    mirrors: str
    #: Hugging Face attributes (``config.x``).
    values: Mapping[str, object] = field(default_factory=dict)
    #: ``FusedMoE`` keyword fallbacks, already merged over the generic ones.
    fallbacks: Mapping[str, object] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()

    def fallback(self, name: str) -> object:
        """The value assumed for keyword ``name`` when a call site's argument does not resolve."""
        return self.fallbacks.get(name)


def _parse(text: str, generic: Mapping[str, object]) -> TinyConfig:
    raw = json.loads(text)
    return TinyConfig(
        key=raw["key"],
        mirrors=raw["mirrors"],
        values=dict(raw.get("config", {})),
        fallbacks={**generic, **raw.get("fallbacks", {})},
        aliases=tuple(raw.get("aliases", ())),
        classes=tuple(raw.get("classes", ())),
    )


@functools.lru_cache(maxsize=1)
def load_configs() -> Mapping[str, TinyConfig]:
    """Every packaged config by key, ``default`` included. Read once per process."""
    folder = resources.files(__name__)
    generic = json.loads((folder / f"{DEFAULT_KEY}.json").read_text(encoding="utf-8"))
    configs = {DEFAULT_KEY: _parse(json.dumps(generic), {})}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json") and entry.name != f"{DEFAULT_KEY}.json":
            tiny = _parse(entry.read_text(encoding="utf-8"), generic.get("fallbacks", {}))
            configs[tiny.key] = tiny
    return configs


def config_for(path: str, class_name: str | None) -> TinyConfig:
    """The config for a call site: by file stem, then alias, then MoE class, else ``default``."""
    configs = load_configs()
    stem = PurePosixPath(path).stem
    if stem in configs:
        return configs[stem]
    for tiny in configs.values():
        if stem in tiny.aliases or (class_name is not None and class_name in tiny.classes):
            return tiny
    return configs[DEFAULT_KEY]
