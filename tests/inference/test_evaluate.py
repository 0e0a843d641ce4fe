"""`TaskModel.evaluate` reproduces the accuracy the task file (and so the card) records, through the public path."""

from __future__ import annotations

import pytest
from PIL import Image

import mu2hub


def test_evaluate_equals_the_recorded_test_accuracy(evolved):
    for task in evolved.tasks:
        model = mu2hub.from_pretrained(evolved.repo, task=task)
        kwargs = evolved.config["task_kwargs"].get(task, {})  # the data exactly as the run built it
        result = model.evaluate(task, data_kwargs=kwargs, batch_size=17)  # an odd batch: the last one is short
        recorded = model.task_file.metrics["test_accuracy"]
        assert result.recorded == recorded and result.num_examples == model.task_file.metrics["num_test_examples"]
        assert result.correct == round(recorded * result.num_examples)  # the same images right, not just close
        assert result.reproduces and result.accuracy == pytest.approx(recorded, abs=1e-9)
        val = model.evaluate(task, split="validation", data_kwargs=kwargs)
        assert val.recorded == model.task_file.metrics["validation_accuracy"] and val.reproduces


def test_evaluate_matches_labels_by_name(evolved, tmp_path):
    """An imagefolder holding some of the classes (its own order): scored by class name, and equal to predict."""
    model = mu2hub.from_pretrained(evolved.repo, task="digits")
    test = mu2hub.data.get_task("digits").test
    keep = [i for i in range(len(test.labels)) if int(test.labels[i]) in (3, 7, 9)][:40]
    for split in ("train", "test"):
        for i in keep:
            d = tmp_path / "subset" / split / str(int(test.labels[i]))
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(test.images[i]).save(d / f"{i}.png")
    result = model.evaluate(f"imagefolder:{tmp_path / 'subset'}")
    data = mu2hub.data.get_task(f"imagefolder:{tmp_path / 'subset'}")
    preds = [p[0]["label"] for p in model.predict(list(data.test.images), top_k=1)]
    truth = [data.labels[y] for y in data.test.labels]
    assert result.correct == sum(p == t for p, t in zip(preds, truth)) and result.num_examples == len(truth)
    assert result.recorded == model.task_file.metrics["test_accuracy"]  # shown for comparison, not claimed equal
    (tmp_path / "other" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "other" / "train" / "dog").mkdir(parents=True)
    for name in ("cat", "dog"):
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "other" / "train" / name / f"{i}.png")
    with pytest.raises(ValueError, match=r"classes \['cat', 'dog'\] are not among the task's labels"):
        model.evaluate(f"imagefolder:{tmp_path / 'other'}", split="train")
    with pytest.raises(ValueError, match="split='dev'"):
        model.evaluate("digits", split="dev")


def test_a_dataset_of_varying_image_sizes_is_decoded_at_the_tasks_size(evolved, tmp_path, capsys):
    """`evaluate` and `predict` on images of two sizes decode them at the task's image size, as `finetune` does."""
    from mu2hub import cli
    from mu2hub.errors import VaryingImageSizesError

    model = mu2hub.from_pretrained(evolved.repo, task="digits")
    test = mu2hub.data.get_task("digits").test
    for i in range(24):
        d = tmp_path / "mixed" / ("train" if i % 2 else "test") / str(int(test.labels[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[i]).resize((8 + 4 * (i % 3),) * 2).save(d / f"{i}.png")
    spec = f"imagefolder:{tmp_path / 'mixed'}"
    with pytest.raises(VaryingImageSizesError):
        mu2hub.data.get_task(spec)  # without a size to decode to
    data = mu2hub.data.get_task(spec, decode_size=model.task_file.image_size)
    result = model.evaluate(spec)
    preds = [p[0]["label"] for p in model.predict(list(data.test.images), top_k=1)]
    assert result.correct == sum(p == data.labels[y] for p, y in zip(preds, data.test.labels))
    assert result.num_examples == 12
    assert cli.main(["predict", evolved.repo, "--task", "digits", spec]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 12
