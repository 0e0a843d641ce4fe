"""Public entry points: `from_pretrained(repo, task=...)` -> `TaskModel` (or `tasks=[...]` -> `MultiTaskModel`),
and `from_transformers` / `from_timm` / `from_big_vision` for checkpoints of other libraries.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from .errors import ArgumentError, TaskRequiredError
from .format.system import Structure, SystemConfig, TaskFile, component_refs
from .hub.metadata import list_tasks, summarize, system_info  # noqa: F401  (re-exported)
from .hub.store import open_store
from .inference.multitask import MultiTaskModel
from .inference.task import TaskModel, _DeviceTensors, load_from_store, resolve_device


def from_pretrained(
    repo_id_or_path: str | os.PathLike,
    task: str | None = None,
    *,
    tasks: Sequence[str] | str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    subfolder: str | None = None,
    device: Any = None,
    dtype: Any = None,
) -> Any:
    """Load one task of a mu2hub system (or several), downloading only the components their paths activate.

    Args:
        repo_id_or_path (`str`): a Hub repo id (`"org/name"`) or a local folder in the same layout.
        task (`str`, *optional*): the task name (`mu2hub.list_tasks(repo)` lists them) -> a `TaskModel`.
        tasks (`list[str]` or `"all"`, *optional*): several tasks -> a `MultiTaskModel` holding every shared
            component once (pass `task` or `tasks`, not both).
        revision (`str`, *optional*): branch, tag or commit; resolved once and pinned for every file.
        cache_dir, token, local_files_only, force_download: as in `huggingface_hub.hf_hub_download`.
        subfolder (`str`, *optional*): the system lives in this folder of the repo (or of the local folder).
        device (*optional*): where the parameters go: `"cpu"`, `"gpu"`, `"gpu:1"`, `"tpu"` or a `jax.Device`;
            defaults to JAX's default device.
        dtype (*optional*): compute dtype (`"bfloat16"`); parameters stay float32.

    Returns:
        `TaskModel`, or `MultiTaskModel` with `tasks=`.

    Raises:
        `TaskRequiredError` (a `TypeError`): neither `task` nor `tasks` (the message lists the tasks there are).
        `TaskNotFoundError`: no such task (the message lists the tasks there are and the closest name).
        `LocalFolderNotFoundError`: a path such as `./x` that is no folder.
        `ComponentIntegrityError`: a file does not match its id even after one re-download.
        `LocalFilesMissingError`: offline and the cache lacks files (it lists them).
        `FormatError`: a malformed or unsafe `config.json` / task file, or a newer `format_version`.

    Example:
        >>> model = mu2hub.from_pretrained("org/system", task="digits")
        >>> model.predict(image)[0]
        {'label': '7', 'score': 0.98}
        >>> every = mu2hub.from_pretrained("org/system", tasks="all")
        >>> every.predict_all(image)["digits"][0]
        {'label': '7', 'score': 0.98}
    """
    if task is not None and tasks is not None:
        raise ArgumentError(f"pass task={task!r} (one task) or tasks={tasks!r} (several), not both")
    where = resolve_device(device)
    store = open_store(repo_id_or_path, revision=revision, cache_dir=cache_dir, token=token,
                       force_download=force_download, local_files_only=local_files_only, subfolder=subfolder)
    if tasks is not None:
        return MultiTaskModel.from_store(store, tasks, dtype=dtype, repo_id=str(repo_id_or_path),
                                         revision=getattr(store, "commit", None), device=where)
    if task is None:
        raise TaskRequiredError(str(repo_id_or_path), store.list_tasks())
    return load_from_store(store, task, repo_id_or_path, dtype=dtype, device=where)


def from_transformers(
    repo_id_or_path: str | os.PathLike,
    *,
    task: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    dtype: Any = None,
) -> TaskModel:
    """Import a transformers ViT checkpoint (`config.json` + `model.safetensors`, as `google/vit-*`) as a root system.

    The result is a one-path system: `save_pretrained(dir)` writes it in mu2hub's format, ready to be evolved
    (`training/`, root init) or extended. Tensors are read with safetensors; no PyTorch needed.

    Args:
        repo_id_or_path (`str`): a Hub repo id or a local folder.
        task (`str`, *optional*): the path's task name; defaults to the checkpoint's folder/repo name.
        revision, cache_dir, token, local_files_only, force_download: as in `from_pretrained`.
        dtype (*optional*): compute dtype.
    """
    from .convert.transformers import read_transformers_checkpoint

    structure, params, labels = read_transformers_checkpoint(
        repo_id_or_path, revision=revision, cache_dir=cache_dir, token=token,
        local_files_only=local_files_only, force_download=force_download)
    return _imported(structure, params, labels, repo_id_or_path, task=task, revision=revision, dtype=dtype,
                     description="imported from a transformers ViT checkpoint")


def _imported(structure: Structure, params: dict[str, dict[str, np.ndarray]], labels: list[str],
              source: str | os.PathLike, *, task: str | None, revision: str | None, dtype: Any, description: str,
              lineage: dict[str, Any] | None = None) -> TaskModel:
    """A one-path system around imported parameters (`from_transformers`, `from_timm`, `from_big_vision`)."""
    from .data.pp import pp_spec

    name = task or re.sub(r"[^A-Za-z0-9_.\-]+", "-", Path(str(source)).name).strip("-.") or "root"
    config = SystemConfig(structure.dims, structure.image_size, structure.num_layers, name=str(source),
                          description=description)
    tf = TaskFile(task=name, image_size=structure.image_size, num_layers=structure.num_layers,
                  components=component_refs(params, structure.slots()), labels=list(labels),
                  preprocessing=pp_spec(structure.image_size),
                  lineage={"imported_from": str(source), "revision": revision, **(lineage or {})})
    device = {slot: _DeviceTensors({k: jax.device_put(v) for k, v in t.items()}) for slot, t in params.items()}
    return TaskModel(config, tf, device, repo_id=str(source), revision=revision, dtype=dtype)


def from_timm(
    repo_id_or_path: str | os.PathLike,
    *,
    task: str | None = None,
    image_size: int | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    dtype: Any = None,
) -> TaskModel:
    """Import a timm ViT (`timm/vit_large_patch16_224.augreg_in21k`: `config.json` + `model.safetensors`) as a root system.

    Args:
        repo_id_or_path (`str`): a timm Hub repo id or a folder written by `timm.models.save_for_hf`.
        task (`str`, *optional*): the path's task name; defaults to the repo/folder name.
        image_size (`int`, *optional*): resample the position embedding once to this size (class token kept);
            defaults to the checkpoint's own.
        revision, cache_dir, token, local_files_only, force_download, dtype: as in `from_pretrained`.

    Raises:
        FormatError: not a plain timm ViT (e.g. `resnet50`, register tokens, average pooling); names the file.

    Example:
        >>> root = mu2hub.from_timm("timm/vit_large_patch16_224.augreg_in21k", image_size=384)
        >>> root.save_pretrained("roots/vit-l16-384")
    """
    from .convert.roots import at_size, read_timm_checkpoint

    ckpt = read_timm_checkpoint(repo_id_or_path, revision=revision, cache_dir=cache_dir, token=token,
                                local_files_only=local_files_only, force_download=force_download)
    structure, params = at_size(ckpt, image_size or ckpt.structure.image_size)
    return _imported(structure, params, ckpt.labels, repo_id_or_path, task=task, revision=revision, dtype=dtype,
                     description="imported from a timm ViT checkpoint", lineage=ckpt.info)


def from_big_vision(path: str | os.PathLike, *, task: str | None = None, image_size: int | None = None,
                    head: bool = True, dtype: Any = None) -> TaskModel:
    """Import a big_vision / vit_jax ViT `.npz` (the AugReg `gs://vit_models/augreg/*.npz` files) as a root system.

    Its `config.json` records `activation="gelu_tanh"` (Flax's `nn.gelu`); see `mu2hub.roots`.

    Args:
        path (`str`): the `.npz` file (read with `allow_pickle=False`).
        task, image_size, dtype: as in `from_timm`.
        head (`bool`, defaults to `True`): keep the classifier; False (needed when the file has a `pre_logits`
            layer) gives a zero one-class head.
    """
    from .convert.roots import at_size, read_big_vision_checkpoint

    ckpt = read_big_vision_checkpoint(path, head=head)
    structure, params = at_size(ckpt, image_size or ckpt.structure.image_size)
    return _imported(structure, params, ckpt.labels, path, task=task or Path(path).stem, revision=None, dtype=dtype,
                     description="imported from a big_vision ViT checkpoint", lineage=ckpt.info)
