"""The µNet score and the replacement rules, pure (spec §3.5, §3.6).

score = quality × base^(accounted_params / P0) [× base^(flops / F0)], where a path's accounted parameters split
each component's size among the tasks that use it. With base 1.0 (the default µ2Net configuration) the score is
the validation quality; `Size scale:X` sets base = X/100 and so trades quality for fewer *new* parameters.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Collection, Iterable, Mapping, NamedTuple, Sequence

#: The pseudo-task that owns the root model's components (the reference's `NOT_TRAINABLE` lock). Not a valid task
#: name (`format.check_task_name`), so it can never collide with one.
ROOT = "<root>"


class ScoredPath(NamedTuple):
    """A path as selection and parent sampling see it: its id and its score.

    Ids are JSON scalars (ints from a run's path counter, or strings such as `"agent:7"` across agents);
    `best_path` also needs them to order by age (higher = newer).
    """

    id: int | str
    score: float


def accounted_params(
    components: Sequence[tuple[str, int]],
    users: Mapping[str, Collection[str]],
    task: str,
    *,
    root_counts: bool,
) -> float:
    """Σ num_params(c) / |users(c) ∪ {task}| over the path's components (spec §3.5).

    Args:
        components: `(component id, num_params)` for each slot of the path.
        users: component id -> the tasks whose retained paths use it (the reference's train locks; the root's
            components list `ROOT`). A component missing here (new in this path) is used by `task` alone.
        task: the path's task, always counted as a user.
        root_counts: False for µ2Net, where `ROOT` is not a sharer (the first task to reuse a root layer pays for
            all of it); True for µ3Net/µ4Net, where the root agent counts like any other.
    """
    total = 0.0
    for cid, n in components:
        sharers = set(users.get(cid, ())) | {task}
        if not root_counts:
            sharers.discard(ROOT)
        total += n / len(sharers)
    return total


def sharing(paths: Mapping[str, Iterable[str]], *, root: Iterable[str] = ()) -> dict[str, list[str]]:
    """Component id -> the tasks whose retained paths use it (the reference's train locks); `root` ids list `ROOT`.

    `paths` maps each task to its best path's component ids (leave out the task being scored: it always counts).
    """
    users: dict[str, list[str]] = {cid: [ROOT] for cid in root}
    for task, ids in paths.items():
        for cid in ids:
            found = users.setdefault(cid, [])
            if task not in found:
                found.append(task)
    return users


def score(
    quality: float,
    accounted: float,
    *,
    base: float,
    num_params: float,
    flops: float | None = None,
    flops_base: float | None = None,
) -> float:
    """quality × base^(accounted/num_params) [× base^(flops/flops_base)] (spec §3.5).

    The FLOPs factor applies when both `flops` and `flops_base` are given (µ2Net+/µ3Net). Raises `ValueError` for a
    missing (NaN) or negative quality and for a base outside (0, 1], which would reward size.
    """
    if not quality >= 0:  # also catches NaN
        raise ValueError(f"quality must be a number >= 0, got {quality!r}")
    if not 0.0 < base <= 1.0:
        raise ValueError(f"base must be in (0, 1], got {base!r}")
    out = quality * base ** (accounted / num_params)
    if flops is not None and flops_base is not None:
        out *= base ** (flops / flops_base)
    return out


@dataclass(frozen=True)
class ScorerConfig:
    """One reference scorer (`ScorerDecay` kwargs): base s, params normaliser P0, optional FLOPs normaliser F0."""

    base: float
    num_params: float
    flops: float | None = None
    root_counts: bool = False

    def score(self, quality: float, accounted: float, flops: float | None = None) -> float:
        if self.flops is not None and flops is None:
            raise ValueError("this scorer penalises FLOPs: pass the path's forward FLOPs")
        return score(quality, accounted, base=self.base, num_params=self.num_params, flops=flops, flops_base=self.flops)

    def path_score(self, quality: float, components: Sequence[tuple[str, int]], users: Mapping[str, Collection[str]],
                   task: str, flops: float | None = None) -> float:
        """A path's score under the sharing `users` describes *now*: the reference recomputes it on every call, so
        a path whose components other tasks came to share since it was trained scores higher today."""
        return self.score(quality, accounted_params(components, users, task, root_counts=self.root_counts), flops)

    @classmethod
    def from_config(cls, scorer: Mapping[str, Any], default_num_params: float) -> "ScorerConfig":
        """A run config's `scorer` dict; `num_params` None normalises by `default_num_params` (the root's)."""
        return cls(scorer.get("base", 1.0), scorer.get("num_params") or default_num_params, scorer.get("flops"),
                   root_counts=scorer.get("root_counts", False))

    def with_base(self, base: float) -> "ScorerConfig":
        """Another base: `Size scale:X` (µ2Net, base X/100) or µ3Net's `SCALE_FACTOR` override."""
        return dataclasses.replace(self, base=base)


_P0_L16, _P0_B16, _P0_TI3 = 303_303_682, 85_652_738, 1_484_162
#: The reference's `Size scale:X` settings.
SIZE_SCALES = (98, 95, 90, 70, 30, 2)

_MU2NET = {
    "mu2net-L16": ScorerConfig(1.0, _P0_L16),
    "mu2net-B16": ScorerConfig(1.0, _P0_B16),
    # ti0 (cmaterdb) reuses the Ti/16-3 normaliser in the reference.
    "mu2net-Ti3": ScorerConfig(1.0, _P0_TI3),
}
SCORERS: Mapping[str, ScorerConfig] = MappingProxyType({
    **_MU2NET,
    **{f"{name}-size{x}": cfg.with_base(x / 100) for name, cfg in _MU2NET.items() for x in SIZE_SCALES},
    "mu3net-L16": ScorerConfig(0.99, 2.2e9, 3.8e12, root_counts=True),
    "mu3net-Ti0": ScorerConfig(0.99, 1e6, 1e6, root_counts=True),
    "mu3net-Ti3": ScorerConfig(1.0, _P0_TI3, 1.5e7, root_counts=True),
    "mu3net-B16": ScorerConfig(1.0, _P0_B16, 1e11, root_counts=True),
    "mu4net-L16": ScorerConfig(0.99, 2.2e9, 3.8e12, root_counts=True),
})


def get_scorer(name: str) -> ScorerConfig:
    """A reference scorer by name; unknown names raise, listing the known ones."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; known: {', '.join(sorted(SCORERS))}") from None


def is_better_or_equal(new_score: float, old_score: float | None) -> bool:
    """Whether a new path replaces the incumbent: on ≥, so ties go to the newer path (spec §3.1, §3.4).

    `old_score=None` means no incumbent (a child of a foreign or root parent starts from −∞), so it is kept.
    """
    return old_score is None or new_score >= old_score


def best_path(paths: Iterable[ScoredPath], *, oldest_on_tie: bool = False) -> ScoredPath:
    """The max-score path; ties go to the highest id (µ2Net/µ3Net), or the lowest with `oldest_on_tie` (µ4Net).

    Raises `ValueError` on an empty population and on a NaN score (max() would silently misorder it).
    """
    paths = list(paths)
    if not paths:
        raise ValueError("no paths to choose the best from")
    if any(math.isnan(p.score) for p in paths):
        raise ValueError(f"NaN score among paths {[p.id for p in paths if math.isnan(p.score)]}")
    # max() keeps the first of equal maxima, so the id order decides ties (as the reference's get_best_path).
    return max(sorted(paths, key=lambda p: p.id, reverse=not oldest_on_tie), key=lambda p: p.score)
