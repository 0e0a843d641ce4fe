"""µ2Net mutation rules as pure functions of (parent, search space, rng) (spec §2.4–2.6).

A child is made in this order, as in the reference's `Path.clone`:
1. `sample_data_hparams` once per generation (all siblings share one input pipeline, §2.5);
2. `mutate_hparams` (copy the parent's hparams, set `num_classes`, overwrite the `ds_*` keys, mutate);
3. `mutate_adapters` (§2.4.3), then `format.slot_names(num_layers, adapter_layers)` gives the child's slots;
4. `assemble`: for each slot, share a frozen ancestor component, clone one, or init/resize (§2.4.4);
5. `hparams_diff(parent, child)` is the record kept in `metrics.mutations`.

Every random decision draws from the `np.random.Generator` passed in; nothing touches global RNG state. Per-action
µ (µ2Net+/µ3Net, §2.6) lives in `make_mu_for`: the probability of action `a` is the inherited hparam `_mu_|a`,
itself mutated one step (with probability `_mu_`) before it is used and written back into the child.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Literal, Mapping, Sequence

import numpy as np

from .hparams import SearchSpace

MU = "_mu_"
#: A callable `action -> probability` (e.g. `"clone:block.3"` -> 0.2); see `make_mu_for`.
MuFor = Callable[[str], float]

# Keys `mutate_hparams` may change; `ds_*` keys are sampled per generation instead (§2.4.1, §2.5).
_STRUCTURAL = ("_mu_", "num_layers", "adapter_dim")


def _fires(p: float, rng: np.random.Generator) -> bool:
    """The reference's `p > uniform()`: an event of probability p."""
    return bool(rng.random() < p)


def incremental_step(value: Any, values: Sequence[Any], rng: np.random.Generator, *, key: str = "value") -> Any:
    """Move one step along an ordered value list: index+1 or index−1 with p 0.5 each, clamped (spec §2.4.2).

    At either end the move is therefore a no-op half the time. Raises `ValueError` when `value` is not on the
    list (a hand-edited or foreign hparam would otherwise silently jump to an arbitrary index).
    """
    values = list(values)
    try:
        idx = values.index(value)
    except ValueError:
        raise ValueError(f"{key}={value!r} is not in its value list {values}; mutations move along that list") from None
    idx += 1 if rng.random() < 0.5 else -1
    return values[min(max(idx, 0), len(values) - 1)]


def make_mu_for(hparams: dict[str, Any], space: SearchSpace, rng: np.random.Generator, *, default_mu: float | None = None) -> MuFor:
    """The probability of each named action, implementing spec §2.6 on `hparams` (mutated in place).

    Without `space.per_action_mu` every action fires with the current `hparams["_mu_"]` (read at call time, so a
    `_mu_` mutated earlier in the same child applies). With it, action `a` uses `hparams["_mu_|a"]` (absent →
    `_mu_`); when the space tunes `_mu_`, that probability first moves one step along the `_mu_` list with
    probability `_mu_` and is written back, so the child inherits it. `default_mu` stands in for a missing `_mu_`
    (generation-shared data sampling has none, §2.5).
    """

    def mu_for(action: str) -> float:
        mu = hparams.get(MU, default_mu)
        if mu is None:
            raise ValueError(f"no {MU!r} in hparams and no default_mu to decide {action!r}")
        if not space.per_action_mu:
            return mu
        key = f"{MU}|{action}"
        p = hparams.get(key, mu)
        if MU in space.ranges:
            if _fires(mu, rng):
                p = incremental_step(p, space.ranges[MU], rng, key=key)
            hparams[key] = p
        return p

    return mu_for


def hparams_diff(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """`{key: (old, new)}` for every child key that differs from the parent (the reference's `metrics.mutations`)."""
    return {k: (parent.get(k), v) for k, v in child.items() if parent.get(k) != v}


def mutate_hparams(
    parent_hparams: Mapping[str, Any],
    space: SearchSpace,
    rng: np.random.Generator,
    *,
    num_classes: int,
    data_hparams: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """A child's hparams: the parent's, with `num_classes` set, `ds_*` overwritten, then mutated (spec §2.4.1).

    Keys of `space.ranges` are visited in sorted order, so `_mu_` comes first and a mutated `_mu_` governs the
    later decisions. Only `_mu_`, `num_layers`, `adapter_dim` and `opt_*` keys mutate here, each independently with
    probability `_mu_` (or its per-action `_mu_|hp:<key>`).

    Args:
        parent_hparams: the parent path's hparams (not modified).
        space: the search space.
        rng: the generator every decision draws from.
        num_classes: the child's task class count (always overwritten: the parent may be another task's path).
        data_hparams: this generation's shared `ds_*` values (and their `_mu_|hp:ds_*`), from `sample_data_hparams`.

    Returns:
        `(child_hparams, mutations)`, `mutations` being `hparams_diff(parent_hparams, child_hparams)`.
    """
    child = copy.deepcopy(dict(parent_hparams))
    child["num_classes"] = num_classes
    child.update(copy.deepcopy(dict(data_hparams or {})))
    mu_for = make_mu_for(child, space, rng)
    for key in sorted(space.ranges):
        if (key in _STRUCTURAL or key.startswith("opt_")) and _fires(mu_for(f"hp:{key}"), rng):
            child[key] = incremental_step(child[key], space.ranges[key], rng, key=key)
    return child, hparams_diff(parent_hparams, child)


def sample_data_hparams(
    defaults: Mapping[str, Any],
    best_hparams: Mapping[str, Any] | None,
    space: SearchSpace,
    rng: np.random.Generator,
    default_mu: float,
) -> dict[str, Any]:
    """The `ds_*` values one generation's children share (spec §2.5).

    Start from the defaults' `ds_*` keys overwritten by the task's current best path; then mutate each key that has
    a range with probability `default_mu` — the *config default* µ, not a path's evolved one. With per-action µ the
    best path's `_mu_|hp:ds_*` probabilities are carried over and evolved too (and returned, so children inherit
    them); that family (µ3Net) also leaves a new task's first generation at the defaults, as the reference mutates
    only when a best path exists.
    """
    ds = {k: copy.deepcopy(v) for k, v in defaults.items() if k.startswith("ds_")}
    if best_hparams is None:
        if space.per_action_mu:
            return ds
    else:
        ds.update({k: copy.deepcopy(best_hparams[k]) for k in ds if k in best_hparams})
        if space.per_action_mu:
            ds.update({k: v for k, v in best_hparams.items() if k.startswith(f"{MU}|hp:ds_")})
    mu_for = make_mu_for(ds, space, rng, default_mu=default_mu)
    for key in sorted(k for k in ds if k.startswith("ds_") and k in space.ranges):
        if _fires(mu_for(f"hp:{key}"), rng):
            ds[key] = incremental_step(ds[key], space.ranges[key], rng, key=key)
    return ds


def mutate_adapters(
    hparams: Mapping[str, Any],
    rng: np.random.Generator,
    mu_for: MuFor,
    *,
    enabled: bool,
    allow_removal: bool = False,
) -> list[int]:
    """The child's sorted adapter layers (spec §2.4.3); the caller stores them as `hparams["adapter_layers"]`.

    When `enabled` (`space.mutate_adapters`), each layer `i < num_layers` without an adapter gains one with
    probability `mu_for("add:adapter.<i>")`; with `allow_removal` (off in every reference config) an existing one
    is dropped with `mu_for("remove:adapter.<i>")`. Adapters above a (possibly reduced) `num_layers` always go.
    A new adapter's output Dense is zero-initialised, so adding one leaves the function unchanged.
    """
    num_layers = int(hparams["num_layers"])
    layers = set(hparams.get("adapter_layers", ()))
    if enabled:
        for i in range(num_layers):
            if i in layers:
                if allow_removal and _fires(mu_for(f"remove:adapter.{i}"), rng):
                    layers.remove(i)
            elif _fires(mu_for(f"add:adapter.{i}"), rng):
                layers.add(i)
    return sorted(i for i in layers if i < num_layers)


# ---------------------------------------------------------------------------------------------------
# Component assembly: the clone walk (spec §2.4.4)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentInfo:
    """What the clone walk needs to know of an ancestor's component: its id and a comparable shape key.

    `shape_key` is anything equal exactly when two components of a slot are interchangeable (e.g. the tensor
    shapes; for `pos_embed` it changes with the image size, for `adapter.*` with `adapter_dim`).
    """

    id: str
    shape_key: Hashable


@dataclass(frozen=True)
class AncestorView:
    """One ancestor path as the clone walk sees it: slot -> component, and which component ids are frozen.

    Frozen ("locked", spec §1.2) = used by a finished task's best path or by the root; the active task's own
    components are trainable.
    """

    components: Mapping[str, ComponentInfo]
    locked_ids: frozenset[str]


@dataclass(frozen=True)
class Decision:
    """How the child gets one slot.

    - `share`: reference the frozen component `source` as is (it stays frozen: knowledge is never overwritten).
    - `clone`: a trainable copy of `source` (params and optimizer trace).
    - `init`: random-init from the fresh model (a new head, adapter or inserted block).
    - `resize`: rebuild `pos_embed` from the root at the child's image size, then clone it (trainable).
    """

    action: Literal["share", "clone", "init", "resize"]
    source: str | None = None


def assemble(
    slots: Sequence[str],
    shape_keys: Mapping[str, Hashable],
    ancestors: Sequence[AncestorView],
    *,
    mu_for: MuFor,
    force_clone: frozenset[str],
    rng: np.random.Generator,
    can_init: bool,
) -> dict[str, Decision]:
    """Decide, for each of the child's slots, where its component comes from (spec §2.4.4).

    For each slot, walk `ancestors` (parent, grandparent, …, root) for the closest usable component:
    - a frozen `head` is another task's head: skip it and keep walking (a task's first path gets a new head);
    - a `pos_embed` or `adapter.*` whose shape key differs (image size / adapter_dim changed): keep walking;
      any other shape difference is a bug in the caller's system and raises;
    - trainable → `clone`; frozen → `clone` if its kind (or exact slot) is in `force_clone`, else with probability
      `mu_for("clone:<slot>")`, otherwise `share`.
    Nothing found: `pos_embed` → `resize`; `head` and `adapter.*` → `init`; `block.*` → `init` only when
    `can_init` (the `num_layers` range exceeds the default, see `hparams.allows_block_insertion`); else raise.

    Args:
        slots: the child's slots (`format.slot_names(num_layers, adapter_layers)`).
        shape_keys: the child's expected shape key per slot.
        ancestors: `[parent, grandparent, …, root]`.
        mu_for: action -> probability (`make_mu_for(child_hparams, space, rng)`).
        force_clone: slot kinds or exact slot names always cloned (`space.force_clone`).
        rng: the generator every decision draws from.
        can_init: whether a `block.*` no ancestor has may be random-initialised (layer insertion).

    Returns:
        `{slot: Decision}` in the order of `slots`.

    Raises:
        ValueError: an unexpected shape difference, or a slot that no ancestor has and that may not be initialised.
    """
    return {slot: _walk(slot, shape_keys[slot], ancestors, mu_for, force_clone, rng, can_init) for slot in slots}


def _walk(
    slot: str,
    want: Hashable,
    ancestors: Sequence[AncestorView],
    mu_for: MuFor,
    force_clone: frozenset[str],
    rng: np.random.Generator,
    can_init: bool,
) -> Decision:
    kind = slot.split(".")[0]
    for depth, ancestor in enumerate(ancestors):
        info = ancestor.components.get(slot)
        if info is None:
            continue
        frozen = info.id in ancestor.locked_ids
        if kind == "head" and frozen:
            continue
        if info.shape_key != want:
            if kind in ("pos_embed", "adapter"):
                continue
            raise ValueError(
                f"{slot}: ancestor {depth} (0 = parent) has component {info.id} with shape {info.shape_key!r}, "
                f"the child needs {want!r}; only pos_embed (image size) and adapters (adapter_dim) may differ"
            )
        if not frozen or kind in force_clone or slot in force_clone:
            return Decision("clone", info.id)
        return Decision("clone", info.id) if _fires(mu_for(f"clone:{slot}"), rng) else Decision("share", info.id)
    if kind == "pos_embed":
        return Decision("resize")
    if kind in ("head", "adapter") or (kind == "block" and can_init):
        return Decision("init")
    if kind == "block":
        raise ValueError(
            f"no ancestor has {slot!r}, and blocks may be random-initialised only when the num_layers range exceeds "
            "the default depth (layer insertion); check the child's num_layers against the root's"
        )
    raise ValueError(f"{slot}: no ancestor (parent … root) has this slot and a {kind!r} cannot be random-initialised")
