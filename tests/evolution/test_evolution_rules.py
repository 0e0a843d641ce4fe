"""The µ2Net evolution rules, one test per reference rule (spec §2–3). Statistical tests use fixed seeds."""

import json
import math

import numpy as np
import pytest
from scipy.stats import chisquare

from mu2hub.evolution import (
    AUTO_TUNE_V1,
    AUTO_TUNE_V2,
    DEFAULTS_LARGE,
    DEFAULTS_MU3NET,
    MU3NET,
    MU3NET_OVERRIDES,
    ROOT,
    AgentParentSampler,
    AncestorView,
    ComponentInfo,
    Decision,
    ParentSampler,
    ScoredPath,
    SearchSpace,
    accounted_params,
    allows_block_insertion,
    assemble,
    best_path,
    get_defaults,
    get_scorer,
    get_space,
    incremental_step,
    is_better_or_equal,
    list_spaces,
    make_mu_for,
    mutate_adapters,
    mutate_hparams,
    sample_data_hparams,
    score,
    validate_defaults,
)


def assert_binomial(count: int, n: int, p: float, z: float = 5.0) -> None:
    """`count` successes in `n` trials is within z standard deviations of an event of probability p."""
    sd = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) <= z * sd + 1e-9, f"{count}/{n} = {count / n:.4f}, expected p = {p:.4f} (±{z * sd / n:.4f})"


# ---------------------------------------------------------------------------------------------------
# Search spaces (§2.2, §2.3)
# ---------------------------------------------------------------------------------------------------


def test_value_lists_equal_the_reference():
    assert AUTO_TUNE_V2["_mu_"] == (0.10, 0.12, 0.14, 0.16, 0.18, 0.20, 0.22, 0.24, 0.26, 0.28, 0.30)
    assert AUTO_TUNE_V2["opt_lr"] == (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    assert AUTO_TUNE_V2["opt_lr_warmup_ratio"] == (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4)
    assert AUTO_TUNE_V2["opt_momentum"] == (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
    assert AUTO_TUNE_V2["ds_aspect_ratio_range_min"] == (0.25, 0.5, 0.75, 1.0)
    assert AUTO_TUNE_V2["ds_hue_delta"] == (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
    # v2 does not tune these (spec §2.3)
    assert not {"opt_lr_schedule", "ds_image_size", "adapter_dim", "num_layers"} & set(AUTO_TUNE_V2)

    assert AUTO_TUNE_V1["opt_momentum"] == (None, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
    assert AUTO_TUNE_V1["opt_lr_schedule"] == ("constant", "cosine", "restarts")
    assert AUTO_TUNE_V1["adapter_dim"] == (8, 16, 32, 64, 128)
    assert AUTO_TUNE_V1["ds_image_size"] == tuple(range(16, 385, 16))
    assert "_mu_" not in AUTO_TUNE_V1

    assert MU3NET["_mu_"] == (0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16, 0.18, 0.20, 0.22, 0.24, 0.26, 0.28, 0.30)
    assert MU3NET["opt_lr_warmup_ratio"] == (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
    assert MU3NET["opt_momentum"] == (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
    assert MU3NET["ds_area_range_min"] == (0.05, 0.5, 0.95, 1.0)
    assert MU3NET["ds_image_size"] == (224, 384)
    assert MU3NET["ds_quality_delta"] == (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
    assert MU3NET_OVERRIDES["VitT0"]["ds_image_size"] == (32, 48)
    assert MU3NET_OVERRIDES["VitT3"]["ds_image_size"] == (16, 32, 48, 64, 80, 96, 112)

    assert get_space("mu2net-size-scale").ranges["num_layers"] == tuple(range(1, 25))
    assert get_space("mu2net-ti0").ranges["num_layers"] == (0, 1, 2, 3)
    assert get_space("mu3net").ranges["num_layers"] == tuple(range(25))
    assert get_space("mu4net").ranges["num_layers"] == tuple(range(26))
    assert get_space("mu4net").ranges["opt_lr"][-1] == 1.0
    assert allows_block_insertion(get_space("mu4net"), 24) and not allows_block_insertion(get_space("mu3net"), 24)


def test_defaults_and_registry():
    assert DEFAULTS_LARGE["_mu_"] == 0.2 and DEFAULTS_LARGE["num_layers"] == 24 and DEFAULTS_LARGE["ds_image_size"] == 384
    assert DEFAULTS_LARGE["ds_flip_left_right"] is True and DEFAULTS_LARGE["ds_area_range_min"] == 0.05
    # µ3Net switches augmentation off
    assert (DEFAULTS_MU3NET["ds_area_range_min"], DEFAULTS_MU3NET["ds_aspect_ratio_range_min"]) == (1.0, 1.0)
    assert DEFAULTS_MU3NET["ds_flip_left_right"] is False and DEFAULTS_MU3NET["ds_quality_delta"] == 0.0
    for name in list_spaces():  # every default with a range sits on its list (the reference's config_validate)
        validate_defaults(get_space(name), get_defaults(name))
    assert get_space("mu2net").force_clone == frozenset({"norm"}) and not get_space("mu2net").per_action_mu
    assert get_space("mu3net").per_action_mu and get_space("mu2net-ti3").mutate_adapters
    with pytest.raises(ValueError, match="mu2net-ti0"):
        get_space("mu2net-tiny")


# ---------------------------------------------------------------------------------------------------
# The one-step rule (§2.4.2)
# ---------------------------------------------------------------------------------------------------


def test_incremental_step_moves_one_step_with_half_probability():
    rng = np.random.default_rng(0)
    values = [10, 20, 30, 40, 50]
    n = 4000
    moves = [values.index(incremental_step(30, values, rng)) - 2 for _ in range(n)]
    assert set(moves) == {-1, 1}
    assert_binomial(moves.count(1), n, 0.5)
    # at the ends the move is a no-op half the time
    low = [incremental_step(10, values, rng) for _ in range(n)]
    assert set(low) == {10, 20}
    assert_binomial(low.count(10), n, 0.5)
    high = [incremental_step(50, values, rng) for _ in range(n)]
    assert set(high) == {40, 50}
    assert_binomial(high.count(50), n, 0.5)


def test_incremental_step_rejects_a_value_off_the_list():
    with pytest.raises(ValueError, match=r"opt_lr=0\.03 is not in its value list"):
        incremental_step(0.03, AUTO_TUNE_V2["opt_lr"], np.random.default_rng(0), key="opt_lr")


# ---------------------------------------------------------------------------------------------------
# Hparam mutation and µ self-tuning (§2.4.1, §2.6)
# ---------------------------------------------------------------------------------------------------


def _parent(**overrides):
    return {**get_defaults("mu2net"), **overrides}


def test_mutate_hparams_copies_sets_num_classes_and_leaves_data_keys_alone():
    parent = _parent(_mu_=1.0, opt_lr=0.01, ds_hue_delta=0.05)
    frozen = json.dumps(parent, sort_keys=True)
    rng = np.random.default_rng(1)
    space = SearchSpace(AUTO_TUNE_V2).with_ranges(_mu_=(1.0,))  # µ = 1: every eligible key mutates
    child, mutations = mutate_hparams(parent, space, rng, num_classes=7, data_hparams={"ds_crop": False})
    assert json.dumps(parent, sort_keys=True) == frozen  # parent untouched
    assert child["num_classes"] == 7 and child["ds_crop"] is False
    assert child["ds_hue_delta"] == 0.05  # ds_* are sampled per generation, never here
    assert child["opt_lr"] in (0.005, 0.02)  # interior value: always moves one step
    assert mutations == {k: (parent.get(k), v) for k, v in child.items() if parent.get(k) != v}
    assert mutations["num_classes"] == (1, 7) and "ds_hue_delta" not in mutations


def test_mu_mutates_first_and_the_childs_mu_drives_later_keys():
    # Two-value µ list: a child whose µ jumped to 0.9 must mutate opt_lr with p 0.9, not the parent's 0.1.
    space = SearchSpace({"_mu_": (0.1, 0.9), "opt_lr": AUTO_TUNE_V2["opt_lr"]})
    rng = np.random.default_rng(2)
    changed = {0.1: [0, 0], 0.9: [0, 0]}  # child µ -> [opt_lr changed, children]
    for _ in range(20000):
        child, _ = mutate_hparams(_parent(_mu_=0.1, opt_lr=0.01), space, rng, num_classes=2)
        changed[child["_mu_"]][0] += child["opt_lr"] != 0.01
        changed[child["_mu_"]][1] += 1
    assert_binomial(changed[0.9][1], 20000, 0.1 * 0.5)  # µ itself mutated with p = parent µ, then moved up
    for mu, (k, n) in changed.items():
        assert_binomial(k, n, mu)


def test_mutation_frequency_tracks_the_inherited_mu():
    space = get_space("mu2net")
    rng = np.random.default_rng(3)
    n = 4000
    for parent_mu in (0.10, 0.30):
        hits = sum(
            mutate_hparams(_parent(_mu_=parent_mu, opt_lr=0.01), space, rng, num_classes=2)[0]["opt_lr"] != 0.01
            for _ in range(n)
        )
        # E[child µ]: µ moves one step with p µ; at either end of the list that step is a no-op half the time
        neighbour = 0.12 if parent_mu == 0.10 else 0.28
        expected = (1 - parent_mu) * parent_mu + parent_mu * (parent_mu + neighbour) / 2
        assert_binomial(hits, n, expected)


def test_per_action_mu_is_used_and_written_back():
    space = get_space("mu3net")
    rng = np.random.default_rng(4)
    parent = {**get_defaults("mu3net"), "_mu_": 0.02, "_mu_|hp:opt_lr": 0.30}
    n = 4000
    lr_hits = momentum_hits = 0
    for _ in range(n):
        child, _ = mutate_hparams(parent, space, rng, num_classes=2)
        lr_hits += child["opt_lr"] != parent["opt_lr"]
        momentum_hits += child["opt_momentum"] != parent["opt_momentum"]
        # every considered key's action probability is inherited by the child, and on the µ list
        for key in ("_mu_", "num_layers", "opt_lr", "opt_lr_warmup_ratio", "opt_momentum", "opt_nesterov"):
            assert child[f"_mu_|hp:{key}"] in MU3NET["_mu_"]
        assert not any(k.startswith("_mu_|hp:ds_") for k in child)
    # opt_lr uses its own 0.30 (moved a step with p ≈ 0.02); opt_momentum falls back to _mu_ ≈ 0.02
    assert_binomial(lr_hits, n, 0.30 - 0.02 * 0.01)
    assert momentum_hits < n * 0.05


def test_make_mu_for_without_per_action_mu_returns_the_current_mu_and_writes_nothing():
    hparams = {"_mu_": 0.2}
    mu_for = make_mu_for(hparams, get_space("mu2net"), np.random.default_rng(0))
    assert mu_for("clone:block.3") == 0.2
    hparams["_mu_"] = 0.3  # read at call time: a µ mutated earlier in the same child applies
    assert mu_for("clone:block.3") == 0.3 and set(hparams) == {"_mu_"}


# ---------------------------------------------------------------------------------------------------
# Generation-shared data hparams (§2.5)
# ---------------------------------------------------------------------------------------------------


def test_data_hparams_start_from_best_path_and_mutate_with_the_config_default_mu():
    space = get_space("mu2net")
    rng = np.random.default_rng(5)
    best = {**get_defaults("mu2net"), "_mu_": 0.30, "ds_hue_delta": 0.05, "ds_crop": False}
    n = 4000
    hue_changed = 0
    for _ in range(n):
        ds = sample_data_hparams(DEFAULTS_LARGE, best, space, rng, default_mu=0.1)
        assert set(ds) == {k for k in DEFAULTS_LARGE if k.startswith("ds_")}
        assert ds["ds_image_size"] == 384  # no range: never mutates
        hue_changed += ds["ds_hue_delta"] != 0.05
    assert_binomial(hue_changed, n, 0.1)  # the config default µ, not the best path's 0.30
    # µ2Net mutates even without a best path (a new task's first generation)
    assert any(sample_data_hparams(DEFAULTS_LARGE, None, space, rng, 1.0) != {k: v for k, v in DEFAULTS_LARGE.items() if k.startswith("ds_")} for _ in range(5))


def test_data_hparams_per_action_mu_is_carried_from_the_best_path():
    space = get_space("mu3net")
    rng = np.random.default_rng(6)
    defaults = get_defaults("mu3net")
    best = {**defaults, "ds_hue_delta": 0.05, "_mu_|hp:ds_hue_delta": 0.30, "_mu_|hp:opt_lr": 0.3}
    n = 4000
    hits = 0
    for _ in range(n):
        ds = sample_data_hparams(defaults, best, space, rng, default_mu=0.02)
        hits += ds["ds_hue_delta"] != 0.05
        assert ds["_mu_|hp:ds_hue_delta"] in (0.28, 0.30)  # evolved one step at most, and returned
        assert "_mu_|hp:opt_lr" not in ds
    assert_binomial(hits, n, 0.30 - 0.02 * 0.01)
    # µ3Net leaves a new agent's first generation at the defaults
    assert sample_data_hparams(defaults, None, space, rng, 1.0) == {k: v for k, v in defaults.items() if k.startswith("ds_")}


# ---------------------------------------------------------------------------------------------------
# Adapters (§2.4.3)
# ---------------------------------------------------------------------------------------------------


def test_mutate_adapters_adds_never_removes_by_default_and_drops_above_num_layers():
    rng = np.random.default_rng(7)
    asked = []

    def always(action):
        asked.append(action)
        return 1.0

    assert mutate_adapters({"num_layers": 3, "adapter_layers": [1]}, rng, always, enabled=True) == [0, 1, 2]
    assert asked == ["add:adapter.0", "add:adapter.2"]  # removal is never even considered by default
    assert mutate_adapters({"num_layers": 3, "adapter_layers": [1]}, rng, always, enabled=True, allow_removal=True) == [0, 2]
    assert mutate_adapters({"num_layers": 3, "adapter_layers": [0, 1]}, rng, lambda a: 0.0, enabled=True) == [0, 1]
    # a dropped layer loses its adapter even when adapter mutation is off
    assert mutate_adapters({"num_layers": 1, "adapter_layers": [0, 2]}, rng, always, enabled=False) == [0]
    n = 4000
    added = sum(mutate_adapters({"num_layers": 1, "adapter_layers": []}, rng, lambda a: 0.2, enabled=True) == [0] for _ in range(n))
    assert_binomial(added, n, 0.2)


# ---------------------------------------------------------------------------------------------------
# The clone walk (§2.4.4)
# ---------------------------------------------------------------------------------------------------


def _view(locked=(), **slots):
    """AncestorView from slot=(id, shape) keyword pairs (dots in slot names written as '__')."""
    comps = {slot.replace("__", "."): ComponentInfo(cid, shape) for slot, (cid, shape) in slots.items()}
    return AncestorView(comps, frozenset(locked))


def _assemble(slots, shapes, ancestors, *, mu=0.0, force=frozenset({"norm"}), can_init=False, rng=None):
    return assemble(
        slots, shapes, ancestors, mu_for=lambda action: mu, force_clone=force,
        rng=rng or np.random.default_rng(0), can_init=can_init,
    )


def test_frozen_component_is_cloned_with_probability_mu_else_shared():
    root = _view(locked={"b0"}, block__0=("b0", "B"))
    rng = np.random.default_rng(8)
    n = 4000
    outcomes = [_assemble(["block.0"], {"block.0": "B"}, [root], mu=0.3, rng=rng)["block.0"] for _ in range(n)]
    assert set(outcomes) == {Decision("clone", "b0"), Decision("share", "b0")}
    assert_binomial(outcomes.count(Decision("clone", "b0")), n, 0.3)


def test_trainable_component_is_always_cloned_and_norm_is_forced():
    parent = _view(locked={"n0"}, block__0=("b1", "B"), norm=("n0", "N"))  # b1 is the task's own, trainable
    asked = []

    def never(action):
        asked.append(action)
        return 0.0

    out = assemble(["block.0", "norm"], {"block.0": "B", "norm": "N"}, [parent], mu_for=never,
                   force_clone=frozenset({"norm"}), rng=np.random.default_rng(0), can_init=False)
    assert out == {"block.0": Decision("clone", "b1"), "norm": Decision("clone", "n0")}
    assert asked == []  # neither decision is random: no action probability consulted (or written back)
    # exact slot names force too (the reference's "freeze bottom layers" baselines force top blocks)
    root = _view(locked={"b0", "b1"}, block__0=("b0", "B"), block__1=("b1", "B"))
    forced = _assemble(["block.0", "block.1"], {"block.0": "B", "block.1": "B"}, [root], force=frozenset({"block.1"}))
    assert forced == {"block.0": Decision("share", "b0"), "block.1": Decision("clone", "b1")}
    every = _assemble(["block.0", "block.1"], {"block.0": "B", "block.1": "B"}, [root], force=frozenset({"block"}))
    assert every == {"block.0": Decision("clone", "b0"), "block.1": Decision("clone", "b1")}


def test_another_tasks_locked_head_is_skipped_and_a_new_head_initialised():
    parent = _view(locked={"h_other", "b0"}, head=("h_other", 10), block__0=("b0", "B"))
    root = _view(locked={"h_root", "b0"}, head=("h_root", 1000), block__0=("b0", "B"))
    out = _assemble(["block.0", "head"], {"block.0": "B", "head": 7}, [parent, root])
    assert out["head"] == Decision("init") and out["block.0"] == Decision("share", "b0")
    # the task's own (trainable) head further up the lineage is found and cloned
    own = _view(head=("h_own", 7))
    assert _assemble(["head"], {"head": 7}, [parent, own, root])["head"] == Decision("clone", "h_own")


def test_pos_embed_of_another_size_is_skipped_then_resized():
    parent = _view(locked={"p1"}, pos_embed=("p1", 145))
    grandparent = _view(locked={"p2"}, pos_embed=("p2", 577))
    assert _assemble(["pos_embed"], {"pos_embed": 577}, [parent, grandparent])["pos_embed"] == Decision("share", "p2")
    assert _assemble(["pos_embed"], {"pos_embed": 65}, [parent, grandparent])["pos_embed"] == Decision("resize")


def test_walk_reaches_the_grandparent_when_the_parent_lacks_the_slot():
    parent = _view(block__0=("b_p", "B"))
    grandparent = _view(locked={"a_g"}, adapter__0=("a_g", 32), block__0=("b_g", "B"))
    out = _assemble(["adapter.0", "block.0"], {"adapter.0": 32, "block.0": "B"}, [parent, grandparent], mu=1.0)
    assert out == {"adapter.0": Decision("clone", "a_g"), "block.0": Decision("clone", "b_p")}
    # an adapter of another adapter_dim is skipped like pos_embed, then initialised
    assert _assemble(["adapter.0"], {"adapter.0": 64}, [parent, grandparent])["adapter.0"] == Decision("init")


def test_missing_blocks_and_unexpected_shapes_are_errors():
    root = _view(locked={"b0"}, block__0=("b0", "B"))
    with pytest.raises(ValueError, match="block.1"):
        _assemble(["block.1"], {"block.1": "B"}, [root])
    assert _assemble(["block.1"], {"block.1": "B"}, [root], can_init=True)["block.1"] == Decision("init")
    with pytest.raises(ValueError, match="only pos_embed .* may differ"):
        _assemble(["block.0"], {"block.0": "B2"}, [root])
    with pytest.raises(ValueError, match="cls"):
        _assemble(["cls"], {"cls": "C"}, [root])


def test_clone_probability_per_action_is_written_into_the_child():
    space = get_space("mu3net")
    child = {"_mu_": 0.2, "_mu_|clone:block.0": 0.3}
    rng = np.random.default_rng(9)
    root = _view(locked={"b0", "n0"}, block__0=("b0", "B"), norm=("n0", "N"))
    assemble(["block.0", "norm"], {"block.0": "B", "norm": "N"}, [root], mu_for=make_mu_for(child, space, rng),
             force_clone=space.force_clone, rng=rng, can_init=False)
    assert child["_mu_|clone:block.0"] in (0.28, 0.30) and "_mu_|clone:norm" not in child


# ---------------------------------------------------------------------------------------------------
# Score and replacement (§3.5, §3.6)
# ---------------------------------------------------------------------------------------------------


def test_accounted_params_split_among_users_and_root_is_not_a_sharer_in_mu2net():
    comps = [("shared3", 300), ("root_block", 1000), ("new_head", 10)]
    users = {"shared3": {"a", "b"}, "root_block": {ROOT}}
    assert accounted_params(comps, users, "c", root_counts=False) == 300 / 3 + 1000 + 10
    # a second task reusing the root block then pays half of it
    assert accounted_params([("root_block", 1000)], {"root_block": {ROOT, "c"}}, "d", root_counts=False) == 500
    # µ3Net counts the root agent as a sharer
    assert accounted_params(comps, users, "c", root_counts=True) == 300 / 3 + 1000 / 2 + 10
    # the task's own retained path counts it once, not twice
    assert accounted_params([("own", 50)], {"own": {"c"}}, "c", root_counts=False) == 50


def test_score_formula_and_presets():
    l16 = get_scorer("mu2net-L16")
    assert (l16.base, l16.num_params, l16.root_counts) == (1.0, 303_303_682, False)
    assert get_scorer("mu2net-B16").num_params == 85_652_738 and get_scorer("mu2net-Ti3").num_params == 1_484_162
    assert l16.score(0.9731, 5e8) == 0.9731  # base 1.0: score is the quality
    small = get_scorer("mu2net-L16-size90")
    assert small.base == 0.90
    assert small.score(0.9, 1e8) > small.score(0.9, 3e8)  # more accounted params, lower score
    assert small.score(0.9, 3e8) == pytest.approx(0.9 * 0.9 ** (3e8 / 303_303_682))
    vit = get_scorer("mu3net-L16")
    assert (vit.base, vit.num_params, vit.flops, vit.root_counts) == (0.99, 2.2e9, 3.8e12, True)
    assert vit.score(0.8, 1.1e9, flops=1.9e12) == pytest.approx(0.8 * 0.99**0.5 * 0.99**0.5)
    with pytest.raises(ValueError, match="FLOPs"):
        vit.score(0.8, 1e9)
    assert (get_scorer("mu3net-B16").flops, get_scorer("mu3net-Ti0").num_params) == (1e11, 1e6)
    with pytest.raises(ValueError, match="quality"):
        score(float("nan"), 1.0, base=1.0, num_params=1.0)
    with pytest.raises(ValueError, match="mu2net-L16"):
        get_scorer("mu2net")


def test_replacement_only_on_greater_or_equal_and_ties_go_to_the_newest():
    assert is_better_or_equal(0.5, 0.5) and is_better_or_equal(0.51, 0.5) and not is_better_or_equal(0.49, 0.5)
    assert is_better_or_equal(0.0, None)  # foreign/root parent: no incumbent to beat
    paths = [ScoredPath(3, 0.7), ScoredPath(9, 0.8), ScoredPath(5, 0.8), ScoredPath(1, 0.2)]
    assert best_path(paths).id == 9
    assert best_path(paths, oldest_on_tie=True).id == 5  # µ4Net
    with pytest.raises(ValueError):
        best_path([])


# ---------------------------------------------------------------------------------------------------
# Parent sampling (§3.3)
# ---------------------------------------------------------------------------------------------------


def _exact_ppdecay(own_counts, seed_counts):
    """Closed form of the three-step scheme for a fixed state: own in order, then seeds in order, then uniform."""
    def scan(counts):
        probs, reject = [], 1.0
        for k in counts:
            probs.append(reject * 0.5**k)
            reject *= 1 - 0.5**k
        return probs, reject

    own, r_own = scan(own_counts)
    seeds, r_seed = scan(seed_counts)
    uniform = r_own * r_seed / (len(own_counts) + len(seed_counts))
    return [p + uniform for p in own] + [r_own * p + uniform for p in seeds]


def test_parent_sampling_matches_the_exact_decay_distribution():
    own = [ScoredPath(2, 0.7), ScoredPath(1, 0.9), ScoredPath(3, 0.8)]  # scanned as 1, 3, 2
    state = {"seeds": ["s1", "s2"], "offsprings": [[1, 1], [3, 2], [2, 3], ["s1", 1], ["s2", 2]]}
    order = [1, 3, 2, "s1", "s2"]
    expected = _exact_ppdecay([1, 2, 3], [1, 2])
    assert sum(expected) == pytest.approx(1.0)
    rng = np.random.default_rng(10)
    n = 20000
    picks = [ParentSampler.from_json(state, rng).sample(own) for _ in range(n)]
    observed = [picks.count(pid) for pid in order]
    assert chisquare(observed, [p * n for p in expected]).pvalue > 1e-3


def test_offspring_counts_grow_within_a_generation_and_seeds_rotate():
    rng = np.random.default_rng(11)
    sampler = ParentSampler(rng, offsprings={"s1": 60})  # 0.5^60: s1 is as good as never accepted
    sampler.start_task(["s1", "s2", "s3"])
    sampler.seeds = ["s1", "s2", "s3"]  # fix the shuffled order for the check
    sampler.offsprings["s3"] = 60
    assert sampler.sample([]) == "s2"  # 0.5^0 = 1: the first fresh seed is accepted
    assert sampler.seeds == ["s3", "s1", "s2"] and sampler.offsprings["s2"] == 1
    own = [ScoredPath(7, 0.5)]
    assert sampler.sample(own) == 7 and sampler.offsprings[7] == 1  # counted at once, before the next sibling
    # a seed pool is shuffled at start_task, with the caller's generator
    shuffled = ParentSampler(np.random.default_rng(0))
    shuffled.start_task(list(range(20)))
    assert sorted(shuffled.seeds) == list(range(20)) and shuffled.seeds != list(range(20))


def test_uniform_fallback_over_own_paths_and_seeds_without_rotation():
    state = {"seeds": ["s1", "s2"], "offsprings": [[1, 60], [2, 60], ["s1", 60], ["s2", 60]]}
    own = [ScoredPath(1, 0.9), ScoredPath(2, 0.1)]
    rng = np.random.default_rng(12)
    n = 8000
    samplers = [ParentSampler.from_json(state, rng) for _ in range(n)]
    picks = [s.sample(own) for s in samplers]
    assert all(s.seeds == ["s1", "s2"] for s in samplers)  # the fallback does not rotate
    assert all(s.offsprings[p] == 61 for s, p in zip(samplers, picks))
    for pid in (1, 2, "s1", "s2"):
        assert_binomial(picks.count(pid), n, 0.25)
    with pytest.raises(ValueError, match="seed pool is empty"):
        ParentSampler(rng).sample([])


def test_agent_sampler_decays_own_paths_then_uniform_over_all_loaded_paths():
    own = [ScoredPath("a:1", 0.9)]
    all_paths = ["a:1", "b:4", "root:0"]
    rng = np.random.default_rng(13)
    n = 6000
    picks = [AgentParentSampler(rng, offsprings={"a:1": 1}).sample(own, all_paths) for _ in range(n)]
    assert_binomial(picks.count("a:1"), n, 0.5 + 0.5 / 3)
    assert_binomial(picks.count("root:0"), n, 0.5 / 3)
    sampler = AgentParentSampler(rng, offsprings={"a:1": 60})
    foreign = next(p for p in iter(lambda: sampler.sample(own, all_paths), None) if p != "a:1")
    assert foreign not in sampler.offsprings  # only same-agent children are counted


def test_sampler_state_round_trips_through_json_and_continues_identically():
    rng = np.random.default_rng(14)
    sampler = ParentSampler(rng)
    sampler.start_task(["s1", 4, "s3", 8])
    own = [ScoredPath(10, 0.5), ScoredPath(11, 0.6)]
    for _ in range(7):
        sampler.sample(own)
    saved = json.dumps({"sampler": sampler.to_json(), "rng": rng.bit_generator.state})
    expected = [sampler.sample(own) for _ in range(50)]

    data = json.loads(saved)
    resumed_rng = np.random.default_rng()
    resumed_rng.bit_generator.state = data["rng"]
    resumed = ParentSampler.from_json(data["sampler"], resumed_rng)
    assert [resumed.sample(own) for _ in range(50)] == expected
    assert resumed.to_json() == sampler.to_json()  # int and str ids keep their types

    agent = AgentParentSampler(np.random.default_rng(0), offsprings={"a:1": 2})
    assert AgentParentSampler.from_json(json.loads(json.dumps(agent.to_json())), rng).offsprings == {"a:1": 2}
