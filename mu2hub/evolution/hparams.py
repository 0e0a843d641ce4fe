"""Search spaces and default hparams of the µNet family, with the reference's exact constants.

Every list here is an *ordered* value list: a mutation moves one step along it (spec §2.4.2), so the order is part
of the algorithm, not presentation. Sources: spec §2.2 (defaults), §2.3 (ranges), §2.6 (per-action µ), §3.5–3.6.

mu2hub differences from the reference, all deliberate:
- `adapter_layers` is a sorted list of ints, not the reference's `"_"`-joined string (which CSV round trips
  turned into floats, spec §7.6).
- `opt_momentum=None` in `AUTO_TUNE_V1` means plain SGD without momentum. The reference lists it but then calls
  `float(None)` on it and crashes (spec §7.9); the trainer must pass `None` through to `optax.sgd(momentum=None)`.
- µ3Net/µ4Net defaults also carry `adapter_layers=()` and `adapter_dim=16` so every path has the same keys;
  neither mutates for those agents, so they are inert.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

# ---------------------------------------------------------------------------------------------------
# Value lists (spec §2.3)
# ---------------------------------------------------------------------------------------------------

_LR = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
_BOOL = (True, False)
_COLOR_DELTAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
_COLOR_KEYS = ("ds_brightness_delta", "ds_contrast_delta", "ds_saturation_delta", "ds_hue_delta")

#: µ2Net "auto_tune_v2" (ViT large configs and ti0). `opt_lr_schedule`, `ds_image_size`, `adapter_dim` and
#: `num_layers` do not mutate here; `Size scale:X` and ti0 add `num_layers` (see `num_layers_values`).
AUTO_TUNE_V2: Mapping[str, tuple] = MappingProxyType({
    "_mu_": (0.10, 0.12, 0.14, 0.16, 0.18, 0.20, 0.22, 0.24, 0.26, 0.28, 0.30),
    "opt_lr": _LR,
    "opt_lr_warmup_ratio": (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4),
    "opt_momentum": (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99),
    "opt_nesterov": _BOOL,
    "ds_area_range_min": (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    "ds_crop": _BOOL,
    "ds_aspect_ratio_range_min": (0.25, 0.5, 0.75, 1.0),
    "ds_flip_left_right": _BOOL,
    **{k: _COLOR_DELTAS for k in _COLOR_KEYS},
})

#: µ2Net "auto_tune" v1 (Ti/16-3 Chars, B/16 VDD). No `_mu_` range: µ itself is fixed in v1.
#: `opt_momentum` starts with None (plain SGD; see the module docstring).
AUTO_TUNE_V1: Mapping[str, tuple] = MappingProxyType({
    "adapter_dim": (8, 16, 32, 64, 128),
    "opt_lr": _LR,
    "opt_lr_schedule": ("constant", "cosine", "restarts"),
    "opt_lr_warmup_ratio": (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4),
    "opt_momentum": (None, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99),
    "opt_nesterov": _BOOL,
    "ds_image_size": tuple(16 * i for i in range(1, 25)),
    "ds_area_range_min": (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
    "ds_aspect_ratio_range_min": (0.25, 0.5, 0.75, 1.0),
    "ds_flip_left_right": _BOOL,
    **{k: _COLOR_DELTAS for k in _COLOR_KEYS},
})

#: µ2Net+/µ3Net ViT agent (`config_add_auto_tune`, large "Vit" agent). `num_layers` is added per root depth
#: (0..L: drop layers only); `MU3NET_OVERRIDES` holds the VitT0 / VitT3 / VitB changes.
MU3NET: Mapping[str, tuple] = MappingProxyType({
    "_mu_": (0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16, 0.18, 0.20, 0.22, 0.24, 0.26, 0.28, 0.30),
    "opt_lr": _LR,
    "opt_lr_warmup_ratio": (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3),
    "opt_momentum": (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99),
    "opt_nesterov": _BOOL,
    "ds_image_size": (224, 384),
    "ds_area_range_min": (0.05, 0.5, 0.95, 1.0),
    "ds_aspect_ratio_range_min": (0.5, 0.75, 1.0),
    "ds_flip_left_right": _BOOL,
    **{k: _COLOR_DELTAS for k in (*_COLOR_KEYS, "ds_quality_delta")},
})

#: Agent-class overrides of `MU3NET` (spec §2.3): T3 and B also tune `adapter_dim` and use 16..112 px images.
MU3NET_OVERRIDES: Mapping[str, Mapping[str, tuple]] = MappingProxyType({
    "VitT0": MappingProxyType({"num_layers": tuple(range(4)), "ds_image_size": (32, 48)}),
    "VitT3": MappingProxyType({"adapter_dim": (8, 16, 32, 64, 128), "ds_image_size": tuple(16 * i for i in range(1, 8))}),
    "VitB": MappingProxyType({"adapter_dim": (8, 16, 32, 64, 128), "ds_image_size": tuple(16 * i for i in range(1, 8))}),
})


def num_layers_values(max_layers: int, *, start: int = 0, insert: int = 0) -> tuple[int, ...]:
    """The `num_layers` list `start..max_layers+insert` (spec §2.3).

    `Size scale:X` uses `start=1` (1..24 for L/16: drop layers from the top, never all); ti0 and µ3Net use
    `start=0`; µ4Net uses `insert=1` so a path may grow one random-init block above the root's depth.
    """
    return tuple(range(start, max_layers + insert + 1))


# ---------------------------------------------------------------------------------------------------
# Default hparams per reference config (spec §2.2, §2.3)
# ---------------------------------------------------------------------------------------------------


def _defaults(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(values)


_MU2NET_DATA = dict(
    ds_crop=True, ds_area_range_min=0.05, ds_aspect_ratio_range_min=0.75, ds_flip_left_right=True,
    ds_brightness_delta=0.0, ds_contrast_delta=0.0, ds_saturation_delta=0.0, ds_hue_delta=0.0,
)
# µ3Net+ switches augmentation off and adds JPEG-quality jitter (also off).
_MU3NET_DATA = dict(
    ds_area_range_min=1.0, ds_aspect_ratio_range_min=1.0, ds_flip_left_right=False,
    ds_brightness_delta=0.0, ds_contrast_delta=0.0, ds_saturation_delta=0.0, ds_hue_delta=0.0,
    ds_quality_delta=0.0,
)
_SGD = dict(opt_lr=0.01, opt_lr_schedule="cosine", opt_momentum=0.9, opt_nesterov=False)

#: µ2Net "ViT large" (L/16, 24 layers, 384 px): the 69-task stream.
DEFAULTS_LARGE = _defaults(
    _mu_=0.2, num_classes=1, num_layers=24, adapter_layers=(), adapter_dim=16,
    **_SGD, opt_lr_warmup_ratio=0.05, ds_image_size=384, **_MU2NET_DATA,
)
#: µ2Net Ti/16 capped to 3 layers, Chars benchmark.
DEFAULTS_TI3 = _defaults(
    _mu_=0.1, num_classes=1, num_layers=3, adapter_layers=(), adapter_dim=32,
    **_SGD, opt_lr_warmup_ratio=0.1, ds_image_size=32, **_MU2NET_DATA,
)
#: µ2Net B/16 (12 layers), VDD benchmark.
DEFAULTS_B = _defaults(
    _mu_=0.1, num_classes=1, num_layers=12, adapter_layers=(), adapter_dim=32,
    **_SGD, opt_lr_warmup_ratio=0.1, ds_image_size=80, **_MU2NET_DATA,
)
#: µ2Net Ti/16 with 0 layers and a random-init root, cmaterdb (the quick preliminary experiment).
DEFAULTS_TI0 = _defaults(
    _mu_=0.2, num_classes=1, num_layers=0, adapter_layers=(), adapter_dim=32,
    **_SGD, opt_lr_warmup_ratio=0.1, ds_image_size=32, **_MU2NET_DATA,
)
#: µ3Net large "Vit" agent: as µ2Net large but augmentation off (and no `ds_crop`: area 1.0 disables the crop).
DEFAULTS_MU3NET = _defaults(
    _mu_=0.2, num_classes=1, num_layers=24, adapter_layers=(), adapter_dim=16,
    **_SGD, opt_lr_warmup_ratio=0.05, ds_image_size=384, **_MU3NET_DATA,
)
#: µ3Net small agents (VitT0 / VitT3 / VitB): the µ2Net small configs with augmentation off.
DEFAULTS_MU3NET_TI0 = _defaults(
    _mu_=0.2, num_classes=1, num_layers=0, adapter_layers=(), adapter_dim=32,
    **_SGD, opt_lr_warmup_ratio=0.1, ds_image_size=32, **_MU3NET_DATA,
)
DEFAULTS_MU3NET_TI3 = _defaults(
    _mu_=0.1, num_classes=1, num_layers=3, adapter_layers=(), adapter_dim=32,
    **_SGD, opt_lr_warmup_ratio=0.1, ds_image_size=32, **_MU3NET_DATA,
)
DEFAULTS_MU3NET_B = _defaults(
    _mu_=0.1, num_classes=1, num_layers=12, adapter_layers=(), adapter_dim=32,
    **_SGD, opt_lr_warmup_ratio=0.1, ds_image_size=80, **_MU3NET_DATA,
)
#: µ4Net single-path "Vit" agent (`get_common_config_vit`).
DEFAULTS_MU4NET = _defaults(
    _mu_=0.2, num_classes=1, num_layers=24, adapter_layers=(), adapter_dim=16,
    opt_lr=0.02, opt_lr_schedule="cosine", opt_lr_warmup_ratio=0.02, opt_momentum=0.8, opt_nesterov=True,
    ds_image_size=384, **_MU3NET_DATA,
)

# ---------------------------------------------------------------------------------------------------
# Search spaces
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchSpace:
    """What evolution may change, and how (spec §2.3–2.6).

    Attributes:
        ranges: hparam key -> ordered value list; a key absent here never mutates.
        per_action_mu: µ2Net+/µ3Net learned µ(·): each action has its own inherited probability
            `_mu_|<action>` (spec §2.6). False for µ2Net, where every decision uses the path's `_mu_`.
        mutate_adapters: whether residual adapters may be added (spec §2.4.3).
        force_clone: slot kinds (or exact slot names) that are always cloned, never shared frozen. The
            reference forces the final LayerNorm (`encoder_norm`, here `norm`) because it acts as part of the head.
    """

    ranges: Mapping[str, tuple]
    per_action_mu: bool = False
    mutate_adapters: bool = False
    force_clone: frozenset[str] = field(default_factory=lambda: frozenset({"norm"}))

    def with_ranges(self, **ranges: tuple) -> "SearchSpace":
        """A copy with some value lists added or replaced."""
        return dataclasses.replace(self, ranges=MappingProxyType({**self.ranges, **ranges}))


def with_size_scale(space: SearchSpace, num_layers: int) -> SearchSpace:
    """`Size scale:X` (spec §2.3): also tune depth 1..`num_layers`, unless the space already tunes it."""
    if "num_layers" in space.ranges:
        return space
    return space.with_ranges(num_layers=num_layers_values(num_layers, start=1))


def allows_block_insertion(space: SearchSpace, default_num_layers: int) -> bool:
    """Whether a `block.*` missing from every ancestor may be random-initialised (spec §2.4.4, layer insertion)."""
    return default_num_layers < max(space.ranges.get("num_layers", (-1,)))


def validate_defaults(space: SearchSpace, defaults: Mapping[str, Any]) -> None:
    """Every default with a range must be on its list (the reference's `config_validate`), else it could never mutate."""
    for key, values in space.ranges.items():
        if key not in defaults:
            raise ValueError(f"search space tunes {key!r} but the defaults have no value for it")
        if defaults[key] not in values:
            raise ValueError(f"default {key}={defaults[key]!r} is not in its value list {list(values)}")


def _mu3net(default_num_layers: int, agent: str = "Vit", *, mutate_adapters: bool = False) -> SearchSpace:
    """`config_add_auto_tune(config, agent)`: the large agent tunes depth 0..L and has no adapters."""
    ranges = {**MU3NET, "num_layers": num_layers_values(default_num_layers), **MU3NET_OVERRIDES.get(agent, {})}
    return SearchSpace(MappingProxyType(ranges), per_action_mu=True, mutate_adapters=mutate_adapters)


_V2 = SearchSpace(AUTO_TUNE_V2)

#: Named spaces: name -> (space, the defaults it pairs with).
SPACES: Mapping[str, tuple[SearchSpace, Mapping[str, Any]]] = MappingProxyType({
    "mu2net": (_V2, DEFAULTS_LARGE),
    "mu2net-size-scale": (with_size_scale(_V2, 24), DEFAULTS_LARGE),
    "mu2net-ti0": (_V2.with_ranges(num_layers=num_layers_values(3)), DEFAULTS_TI0),
    "mu2net-ti3": (SearchSpace(AUTO_TUNE_V1, mutate_adapters=True), DEFAULTS_TI3),
    "mu2net-b": (SearchSpace(AUTO_TUNE_V1, mutate_adapters=True), DEFAULTS_B),
    "mu3net": (_mu3net(24), DEFAULTS_MU3NET),
    "mu3net-ti0": (_mu3net(0, "VitT0", mutate_adapters=True), DEFAULTS_MU3NET_TI0),
    "mu3net-ti3": (_mu3net(3, "VitT3", mutate_adapters=True), DEFAULTS_MU3NET_TI3),
    "mu3net-b": (_mu3net(12, "VitB", mutate_adapters=True), DEFAULTS_MU3NET_B),
    "mu4net": (_mu3net(24).with_ranges(opt_lr=(*_LR, 1.0), num_layers=num_layers_values(24, insert=1)), DEFAULTS_MU4NET),
})


# ---------------------------------------------------------------------------------------------------
# Loop rules per family (spec §3.3, §3.4, §3.6): what differs between µ2Net and µ3Net/µ4Net besides the space
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoopRules:
    """How the loop runs a family's search, beyond its value lists.

    Attributes:
        schedule: the `train.make_schedule` variant: "mu2net" (warm-up from lr/100) or "mu3net" (from lr/1000,
            plus the `linear` schedule).
        sampler: "task" — µ2Net `PPDecay`: own paths, then a rotating seed pool of other tasks' paths
            (`ParentSampler`); "agent" — µ3Net/µ4Net: own paths, then uniform over every loaded path
            (`AgentParentSampler`).
        population_max: µ3Net/µ4Net keep only this many of the task's best paths after each generation
            (`max_task_population_size`); None: µ2Net, unbounded within a task iteration.
        oldest_on_tie: µ4Net breaks best-path ties toward the oldest path; µ2Net/µ3Net toward the newest.
    """

    schedule: str = "mu2net"
    sampler: str = "task"
    population_max: int | None = None
    oldest_on_tie: bool = False


#: µ3Net's cap is 16 for the large Vit agent and 7 for Ti0; the reference gives none for Ti3 / B, so they keep the
#: agent default 16. µ4Net caps at 5 and breaks ties toward the oldest path.
_MU3NET_RULES = LoopRules(schedule="mu3net", sampler="agent", population_max=16)
LOOP_RULES: Mapping[str, LoopRules] = MappingProxyType({
    "mu3net": _MU3NET_RULES,
    "mu3net-ti0": dataclasses.replace(_MU3NET_RULES, population_max=7),
    "mu3net-ti3": _MU3NET_RULES,
    "mu3net-b": _MU3NET_RULES,
    "mu4net": dataclasses.replace(_MU3NET_RULES, population_max=5, oldest_on_tie=True),
})


def get_rules(name: str) -> LoopRules:
    """The loop rules of a named space's family (µ2Net spaces: the defaults)."""
    get_space(name)
    return LOOP_RULES.get(name, LoopRules())


def list_spaces() -> list[str]:
    return sorted(SPACES)


def get_space(name: str) -> SearchSpace:
    """The named search space; unknown names raise, listing the known ones."""
    try:
        return SPACES[name][0]
    except KeyError:
        raise ValueError(f"unknown search space {name!r}; known: {', '.join(list_spaces())}") from None


def get_defaults(name: str) -> dict[str, Any]:
    """A fresh, mutable copy of the default hparams paired with a named space."""
    get_space(name)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in SPACES[name][1].items()}
