"""The µ2Net evolution rules, pure: search spaces, mutations, the clone walk, scoring, parent sampling (spec §2–3)."""

from .hparams import (
    AUTO_TUNE_V1,
    AUTO_TUNE_V2,
    DEFAULTS_B,
    DEFAULTS_LARGE,
    DEFAULTS_MU3NET,
    DEFAULTS_MU3NET_B,
    DEFAULTS_MU3NET_TI0,
    DEFAULTS_MU3NET_TI3,
    DEFAULTS_MU4NET,
    DEFAULTS_TI0,
    DEFAULTS_TI3,
    MU3NET,
    MU3NET_OVERRIDES,
    SearchSpace,
    allows_block_insertion,
    get_defaults,
    get_space,
    list_spaces,
    num_layers_values,
    validate_defaults,
    with_size_scale,
)
from .mutation import (
    AncestorView,
    ComponentInfo,
    Decision,
    assemble,
    hparams_diff,
    incremental_step,
    make_mu_for,
    mutate_adapters,
    mutate_hparams,
    sample_data_hparams,
)
from .parents import AgentParentSampler, ParentSampler
from .scorer import (
    ROOT,
    SCORERS,
    ScoredPath,
    ScorerConfig,
    accounted_params,
    best_path,
    get_scorer,
    is_better_or_equal,
    score,
)
