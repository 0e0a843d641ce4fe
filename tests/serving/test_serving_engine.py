"""The shared-prefix engine (mu2hub/serving/engine.py) and the component pool: answers equal each task's own
`TaskModel`, shared stages are applied once, calls stay within the power-of-two buckets, and a byte budget evicts
without changing any answer."""

from __future__ import annotations

import numpy as np
import pytest

import mu2hub
from mu2hub.inference.task import load_task
from mu2hub.errors import ComponentIntegrityError
from mu2hub.format.system import Dims
from mu2hub.inference.probe import probe_images
from mu2hub.serving.engine import Engine, Row, batch_buckets, path_stages
from mu2hub.serving.pool import ComponentPool
from mu2hub.hub.store import LocalStore
from mu2hub.testing import mixed_system

DIMS = Dims(16, 2, 32, 4)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    mixed_system(folder, dims=DIMS, image_size=8, num_layers=3)
    return folder


def _same_predictions(got, want):
    assert [p["label"] for p in got] == [p["label"] for p in want]
    np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in want], rtol=1e-5, atol=1e-6)


def test_predict_all_shares_prefixes_and_equals_each_task(system):
    multi = mu2hub.from_pretrained(system, tasks="all")
    images = probe_images(1, 3, 10)  # resized by each task's preprocessing (8 px or 12 px)
    every = multi.predict_all(images, top_k=3)
    for t in multi.tasks:
        want = multi[t].predict(images, top_k=3)
        for got_row, want_row in zip(every[t], want):
            _same_predictions(got_row, want_row)
    stats = multi.engine.stats
    # every path on its own applies each of its stages once: 5 + 5 + 6 (an adapter) + 5
    assert sum(len(path_stages(tf)) for tf in multi.files.values()) == 21
    # shared: level 0 the embedding at 8 px and at 12 px (2), level 1 block 0 at both sizes (2), level 2 block 1 at
    # both sizes + the adapter (3), level 3 four distinct blocks (4), level 4 two heads + block 2 + the larger head (4),
    # level 5 the adapter path's head (1)
    assert stats.applications == 16 and stats.calls == 16
    assert stats.rows == 4 * 3
    # rows through each stage: 3 images per application, and no application holds one image twice
    assert stats.row_applications == 16 * 3


def test_mixed_rows_chunked_and_bucketed_equal_task_logits(system):
    store = LocalStore(system)
    config = store.read_config()
    files = {t: store.read_task(t) for t in store.list_tasks()}
    models = {t: load_task(store, t) for t in files}
    params = {r.id: models[t].params[r.slot] for t in files for r in files[t].components}
    engine = Engine(config, files, max_batch_size=4)
    assert engine.buckets == [1, 2, 4] and batch_buckets(6) == [1, 2, 4, 6]
    raw = probe_images(2, 11, 9)
    tasks = ["shared_a", "larger", "adapter", "shared_b", "shared_a", "shared_a", "larger", "shared_b", "adapter",
             "shared_a", "shared_b"]
    rows = [Row(t, models[t].preprocess(raw[i])[0], i) for i, t in enumerate(tasks)]
    rows.append(Row("shared_a", rows[0].image, 0))  # the same image and task twice: computed once
    logits = engine.run(rows, params)
    for row, got in zip(rows, logits):
        np.testing.assert_allclose(got, models[row.task].logits(row.image[None])[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(logits[0], logits[-1])
    assert engine.stats.rows == len(rows)
    # 5 shared_a/b rows share the 8-px embedding with the 2 adapter rows: 7 distinct images > 4, so chunks of 4 + 3
    assert engine.stats.calls > engine.stats.applications
    # every call ran at a bucket size: programs are bounded by kinds x token shapes x buckets, not by batch mixes
    for _ in range(3):
        engine.run(rows[:5], params)
    assert engine.compiled_programs <= 4 * 2 * len(engine.buckets)
    assert {key[2][0] for key in engine._programs} <= set(engine.buckets)


def test_pool_under_a_budget_evicts_and_answers_the_same(system):
    store = LocalStore(system)
    config = store.read_config()
    files = {t: store.read_task(t) for t in store.list_tasks()}
    every = ComponentPool(store, config, files)
    whole = {}
    for t in files:
        whole.update(every.acquire(t))
        every.release(list(whole))
    total = every.resident_bytes
    assert total == sum(4 * c.params for c in {c.id: c for tf in files.values() for c in tf.components}.values())
    budget = total // 2
    pool = ComponentPool(store, config, files, budget_bytes=budget)
    engine = Engine(config, files)
    images = probe_images(7, 2, 8)
    models = {t: load_task(store, t) for t in files}
    for t in ["shared_a", "larger", "adapter", "shared_b", "shared_a"]:
        held = pool.acquire(t)
        assert all(pool.holds(cid) for cid in held)  # pinned: nothing in flight is evicted, whatever the budget
        rows = [Row(t, x, i) for i, x in enumerate(models[t].preprocess(images))]
        got = engine.run(rows, held)
        pool.release(list(held))
        assert pool.resident_bytes <= budget
        np.testing.assert_allclose(np.stack(got), models[t].logits(models[t].preprocess(images)), rtol=1e-5, atol=1e-5)
    assert pool.evictions > 0 and pool.loads > len(engine.component_ids(files))


def test_pool_names_a_corrupt_component_and_serves_the_other_tasks(system, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(system, folder)
    store = LocalStore(folder)
    files = {t: store.read_task(t) for t in store.list_tasks()}
    head = files["larger"].component_map()["head"]
    path = folder / head.filename
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    pool = ComponentPool(store, store.read_config(), files)
    with pytest.raises(ComponentIntegrityError, match=head.id):
        pool.acquire("larger")
    assert not pool.holds(head.id)
    held = pool.acquire("shared_a")
    pool.release(list(held))
