"""Parent sampling (spec §3.3): prefer good, little-explored paths; fall back to other tasks' paths.

Both samplers keep only plain data (path ids, offspring counters, seed order) so a run can persist them with
`to_json()` and resume with `from_json()`. The generator is the caller's: persist `rng.bit_generator.state`
next to the sampler state and a resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .scorer import ScoredPath

#: A path id: a JSON scalar (see `ScoredPath`), so the sampler state round-trips through JSON unchanged.
PathId = int | str


def _by_score(paths: Sequence[ScoredPath]) -> list[PathId]:
    """Ids in descending score; a stable sort, so equal scores keep the caller's order (the reference's)."""
    return [p.id for p in sorted(paths, key=lambda p: p.score, reverse=True)]


def _decay_pick(candidates: Sequence[PathId], offsprings: Mapping[PathId, int], rng: np.random.Generator) -> PathId | None:
    """Scan `candidates` in order, accepting each with probability 0.5^(its offspring count); None if none is."""
    for pid in candidates:
        if rng.random() < 0.5 ** offsprings.get(pid, 0):
            return pid
    return None


def _pairs(counts: Mapping[PathId, int]) -> list[list[Any]]:
    # [[id, n], ...] rather than a JSON object: object keys would turn int ids into strings.
    return [[pid, n] for pid, n in counts.items()]


class ParentSampler:
    """µ2Net `PPDecay` for one task (spec §3.3).

    1. The task's own paths in descending score, each accepted with p = 0.5^(children already spawned from it for
       this task).
    2. Else the seed pool (other non-private tasks' paths plus the root, shuffled at `start_task`) with the same
       rule; an accepted seed rotates to the end of the pool.
    3. Else uniform over own paths + seeds.
    Every pick counts one more offspring for that path, at once, so siblings in one generation spread out.

    State: `seeds` (current order) and `offsprings` (path id -> children spawned for this task), both kept across
    task iterations: a revisited task remembers how much it already explored each path.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        seeds: Sequence[PathId] = (),
        offsprings: Mapping[PathId, int] | None = None,
    ):
        self.rng = rng
        self.seeds: list[PathId] = list(seeds)
        self.offsprings: dict[PathId, int] = dict(offsprings or {})

    def start_task(self, seed_pool: Sequence[PathId]) -> None:
        """Begin a task iteration (spec §3.1): the pool is every other non-private task's path and the root, shuffled."""
        self.seeds = list(seed_pool)
        self.rng.shuffle(self.seeds)

    def sample(self, own_paths: Sequence[ScoredPath]) -> PathId:
        """Pick the next parent among `own_paths` (the task's live paths) and the seed pool; count the offspring."""
        pid = _decay_pick(_by_score(own_paths), self.offsprings, self.rng)
        if pid is None:
            pid = _decay_pick(self.seeds, self.offsprings, self.rng)
            if pid is not None:
                pos = self.seeds.index(pid) + 1
                self.seeds = self.seeds[pos:] + self.seeds[:pos]
        if pid is None:
            pool = [p.id for p in own_paths] + self.seeds
            if not pool:
                raise ValueError("no parent to sample: the task has no paths and the seed pool is empty")
            pid = pool[self.rng.integers(len(pool))]
        self.offsprings[pid] = self.offsprings.get(pid, 0) + 1
        return pid

    def to_json(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "offsprings": _pairs(self.offsprings)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], rng: np.random.Generator) -> "ParentSampler":
        return cls(rng, seeds=data["seeds"], offsprings={pid: int(n) for pid, n in data["offsprings"]})


class AgentParentSampler:
    """µ3Net/µ4Net parent sampling for one agent (spec §3.3).

    The agent's own paths in descending score, each accepted with p = 0.5^(same-agent offspring); else uniform over
    every loaded path of every agent, root included. No seed pool, no rotation. Only picks among the agent's own
    paths count offspring (µ3Net counts same-agent children only).
    """

    def __init__(self, rng: np.random.Generator, *, offsprings: Mapping[PathId, int] | None = None):
        self.rng = rng
        self.offsprings: dict[PathId, int] = dict(offsprings or {})

    def sample(self, own_paths: Sequence[ScoredPath], all_paths: Sequence[PathId]) -> PathId:
        """Pick a parent; `all_paths` lists every loaded path id (own, other agents', root)."""
        pid = _decay_pick(_by_score(own_paths), self.offsprings, self.rng)
        if pid is None:
            if not all_paths:
                raise ValueError("no parent to sample: no paths are loaded (create the root first)")
            pid = all_paths[self.rng.integers(len(all_paths))]
        if pid in {p.id for p in own_paths}:
            self.offsprings[pid] = self.offsprings.get(pid, 0) + 1
        return pid

    def to_json(self) -> dict[str, Any]:
        return {"offsprings": _pairs(self.offsprings)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], rng: np.random.Generator) -> "AgentParentSampler":
        return cls(rng, offsprings={pid: int(n) for pid, n in data["offsprings"]})
