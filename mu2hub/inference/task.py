"""A loaded task: `TaskModel` and the loader every layer above uses (`load_task`, `resolve_dtype`, device placement).

The user-facing `from_*` functions are `mu2hub.api`'s; `list_tasks`, `system_info` and `summarize` live in the
JAX-free `mu2hub.hub.metadata` and are re-exported here.
"""

from __future__ import annotations

import os
import re
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .. import model as vit
from ..constants import DEFAULT_TOP_K
from ..errors import ArgumentError, CorruptImageError, ImageInputError, ShapeMismatchError
from ..format.system import ComponentRef, Structure, SystemConfig, TaskFile
from ..hub.metadata import list_tasks, summarize, system_info  # noqa: F401  (re-exported)
from ..hub.store import LocalStore, Store, open_store, task_components

# Device arrays of components already loaded in this process, by id: tasks that share a component share its
# memory (the Space loads every demo task). Weak, so nothing outlives the models that use it.
_LOADED: "weakref.WeakValueDictionary[tuple[str, str], _DeviceTensors]" = weakref.WeakValueDictionary()


class _DeviceTensors(dict):
    """A component's tensors on device; a dict subclass so the process cache can hold it weakly."""


jax.tree_util.register_pytree_node(
    _DeviceTensors,
    lambda d: (tuple(d[k] for k in sorted(d)), tuple(sorted(d))),
    lambda keys, values: dict(zip(keys, values)),
)


def loaded_component(cid: str, device: jax.Device | None = None) -> _DeviceTensors | None:
    """The device copy of component `cid` if some live model in this process holds it (no file is read)."""
    return _LOADED.get((cid, "default" if device is None else str(device)))


def device_component(cid: str, tensors: dict[str, np.ndarray], device: jax.Device | None = None) -> _DeviceTensors:
    """The device copy of component `cid`, made once per device: every model of this process that holds the component
    (a task, a fine-tuned variant, the server's pool) shares it, since its id is its content."""
    key = (cid, "default" if device is None else str(device))
    hit = _LOADED.get(key)
    if hit is None:
        hit = _DeviceTensors({k: jax.device_put(v, device) for k, v in tensors.items()})
        _LOADED[key] = hit
    return hit


def resolve_device(device: Any) -> jax.Device | None:
    """`device=` of `from_pretrained`: None (JAX's default), a `jax.Device`, or `"cpu"` / `"gpu"` / `"tpu"` with an
    optional index (`"gpu:1"`); torch's `"cuda"` means `"gpu"`."""
    if device is None or isinstance(device, jax.Device):
        return device
    text = str(device).strip().lower() if isinstance(device, str) else ""
    m = re.fullmatch(r"(cpu|gpu|cuda|tpu)(?::(\d+))?", text)
    if not m:
        raise ArgumentError(f"device={device!r}: pass 'cpu', 'gpu', 'tpu' (optionally ':N', e.g. 'gpu:1') or a jax.Device")
    platform, index = ("gpu" if m.group(1) == "cuda" else m.group(1)), int(m.group(2) or 0)
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        devices = []
    if index >= len(devices):
        have = ", ".join(sorted({str(d.platform) for d in jax.devices()}))
        raise ArgumentError(f"device={device!r}: this process has {len(devices)} {platform} device(s) (JAX sees: {have})")
    return devices[index]


def resolve_dtype(dtype: Any) -> Any:
    if dtype is None or dtype in ("float32", jnp.float32):
        return None
    if dtype in ("bfloat16", "bf16", jnp.bfloat16):
        return jnp.bfloat16
    if dtype in ("float16", jnp.float16):
        return jnp.float16
    raise ArgumentError(f"dtype {dtype!r} not supported: use None/'float32', 'bfloat16' or 'float16'")


class TaskModel:
    """One task's path through a system, ready to run.

    Attributes:
        config (`SystemConfig`): the system's shared dimensions.
        task_file (`TaskFile`): the path, labels, preprocessing, metrics and lineage.
        params (`{slot: {tensor: jax.Array}}`): the path's component parameters (float32 masters).
        repo_id (`str`): where it was loaded from (repo id or folder); `revision` the pinned commit, if any;
            `subfolder` the folder of the repo the system lives in, if any.

    Loading, saving and sharing follow huggingface_hub's `ModelHubMixin`: `TaskModel.from_pretrained(repo, task=...)`,
    `model.save_pretrained(folder)`, `model.push_to_hub(repo_id)`.

    Example:
        >>> model = TaskModel.from_pretrained("org/system", task="digits")
        >>> model.save_pretrained("digits-only/")        # a standalone one-task repo, loadable the same way
        >>> model.push_to_hub("me/digits")               # only the files me/digits lacks
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, task: str,
                        revision: str | None = None, cache_dir: str | os.PathLike | None = None,
                        token: str | bool | None = None, force_download: bool = False, local_files_only: bool = False,
                        subfolder: str | None = None, device: Any = None, dtype: Any = None) -> "TaskModel":
        """`mu2hub.from_pretrained(repo, task=...)` as a classmethod, in `ModelHubMixin`'s argument names.

        Args:
            pretrained_model_name_or_path (`str`): a Hub repo id (`"org/name"`) or a local folder.
            task (`str`): the task to load (`mu2hub.list_tasks(repo)` lists them).
            revision, cache_dir, token, force_download, local_files_only, subfolder, device, dtype: as in
                `mu2hub.from_pretrained`.

        Returns:
            `TaskModel`.
        """
        if task is None:
            raise ArgumentError("TaskModel.from_pretrained needs task=...; mu2hub.from_pretrained(repo, tasks=[...]) "
                                "loads several")
        where = resolve_device(device)
        store = open_store(pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir, token=token,
                           force_download=force_download, local_files_only=local_files_only, subfolder=subfolder)
        return load_from_store(store, task, pretrained_model_name_or_path, dtype=dtype, device=where)

    def __init__(self, config: SystemConfig, task_file: TaskFile, params: dict[str, dict[str, jax.Array]], *,
                 repo_id: str = "", revision: str | None = None, dtype: Any = None, subfolder: str | None = None):
        self.config, self.task_file, self.params = config, task_file, params
        self.repo_id, self.revision, self.subfolder = repo_id, revision, subfolder
        self.dtype = resolve_dtype(dtype)
        problems = vit.check_shapes(self.structure, params)
        if problems:
            raise ShapeMismatchError(
                "components do not fit the path: " + "; ".join(problems), path=task_file.filename
            )

    # -- what it is -------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.task_file.task

    @property
    def structure(self) -> Structure:
        return self.task_file.structure(self.config.dims)

    @property
    def labels(self) -> list[str]:
        return list(self.task_file.labels)

    @property
    def components(self) -> list[ComponentRef]:
        return list(self.task_file.components)

    @property
    def activated_params(self) -> int:
        return self.task_file.activated_params

    @property
    def download_bytes(self) -> int:
        return self.task_file.download_bytes

    def path_info(self) -> dict[str, Any]:
        """Slots, component ids, activated parameters and bytes, for display and tests."""
        return {
            "task": self.task,
            "image_size": self.task_file.image_size,
            "num_layers": self.task_file.num_layers,
            "components": [{"slot": c.slot, "id": c.id, "params": c.params, "bytes": c.bytes} for c in self.components],
            "activated_params": self.activated_params,
            "bytes": self.download_bytes,
        }

    def __repr__(self) -> str:
        return (f"TaskModel(task={self.task!r}, repo={self.repo_id!r}, classes={len(self.labels)}, "
                f"layers={self.task_file.num_layers}, image_size={self.task_file.image_size}, "
                f"activated_params={self.activated_params:,})")

    # -- running ----------------------------------------------------------------------------------
    def preprocess(self, images: Any) -> np.ndarray:
        """Images -> the float batch the path was trained on ([-1, 1], the task's size).

        Accepts image file paths, PIL images, arrays [H, W], [H, W, C] or batches [N, H, W, C] (C in 1, 3, 4) of any
        size: uint8 as is, uint16 scaled, floats only in [0, 1] (a 0-255 float array is refused, not guessed at).

        Raises:
            ImageInputError (a ValueError, naming the image's index): no images, an empty or oversized image, NaN /
                Inf, values out of range, another dtype or rank, a path that is not a file; `CorruptImageError` for a
                file that is not an image.
        """
        return preprocess_images(self.task_file, images)

    def logits(self, x: Any) -> np.ndarray:
        """Logits (B, classes). `x` is a float batch already preprocessed (finite, in [-1, 1], the task's size and
        channels), or images (see `preprocess`), which are preprocessed first."""
        if not (isinstance(x, (np.ndarray, jax.Array)) and x.ndim == 4 and np.issubdtype(x.dtype, np.floating)):
            x = self.preprocess(x)
        s = self.structure
        want = (s.image_size, s.image_size, s.dims.num_channels)
        if x.shape[0] == 0 or tuple(x.shape[1:]) != want:
            raise ImageInputError(f"expected a preprocessed batch [N>0, {', '.join(map(str, want))}], got "
                                  f"{list(x.shape)}; pass images to predict() or preprocess() to have them resized")
        x = np.asarray(x, np.float32)
        finite = bool(np.isfinite(x).all())
        if not finite or x.min() < -1.0 or x.max() > 1.0:
            found = "NaN/Inf values" if not finite else f"values in [{x.min():.4g}, {x.max():.4g}]"
            raise ImageInputError(f"a preprocessed batch must be finite and lie in [-1, 1]; got {found}; pass images "
                                  "to predict() or preprocess() instead")
        return np.asarray(vit.apply_path_jit(s, self.params, jnp.asarray(x), dtype=self.dtype))

    def predict(self, images: Any, *, top_k: int = DEFAULT_TOP_K) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Top-k labels with probabilities, like transformers' image-classification pipeline.

        `images` are always images (see `preprocess`), never an already preprocessed batch (use `logits` for those):
        one image -> `[{"label", "score"}, ...]`; a list or batch -> one such list per image. `top_k` (`int`,
        defaults to 5): how many labels each.
        """
        single = not isinstance(images, (list, tuple)) and not (isinstance(images, np.ndarray) and images.ndim == 4)
        check_top_k(top_k)
        out = self.predictions(self.logits(self.preprocess(images)), top_k=top_k)
        return out[0] if single else out

    def predictions(self, logits: Any, *, top_k: int = DEFAULT_TOP_K) -> list[list[dict[str, Any]]]:
        """Top-k (`top_k`, defaults to 5) `{"label", "score"}` per row of `logits` (what `predict` returns for a batch)."""
        return predictions_from_logits(logits, self.labels, top_k=top_k)

    def evaluate(self, data: Any, *, split: str = "test", batch_size: int = 64, data_kwargs: dict | None = None,
                 progress: bool = False) -> Any:
        """Accuracy of this task on a split of `data`, through the same path as `predict`.

        Args:
            data: a registered task name (`"digits"`), `hf:<dataset>`, `imagefolder:<folder>`, a folder, or
                `TaskData`. Its label names must be this task's (any order).
            split (`str`, defaults to `"test"`): `train`, `validation` or `test`.
            batch_size (`int`, defaults to 64): images per forward pass.
            data_kwargs (`dict`, *optional*): forwarded to the data loader (`image_size`, `n_test`, `seed`, ...).
            progress (`bool`, defaults to `False`): a progress bar over batches.

        Returns:
            `mu2hub.inference.evaluate.Evaluation`: `accuracy`, `correct`, `num_examples`, and `recorded` (the task file's
            `metrics.test_accuracy`, what the model card shows) for comparison.

        Example:
            >>> mu2hub.from_pretrained("org/system", task="digits").evaluate("digits").accuracy
            0.9387
        """
        from .evaluate import evaluate

        return evaluate(self, data, split=split, batch_size=batch_size, data_kwargs=data_kwargs, progress=progress)

    # -- writing ----------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, *, push_to_hub: bool = False, repo_id: str | None = None,
                        **push_to_hub_kwargs: Any) -> Path:
        """Write a standalone one-task repo in the published format (config, task file, its components).

        Args:
            save_directory (`str` or `os.PathLike`): the folder (created if absent).
            push_to_hub (`bool`, defaults to `False`): then also `push_to_hub(repo_id, **push_to_hub_kwargs)`.
            repo_id (`str`, *optional*): the repo to push to; defaults to the folder's name.

        Returns:
            `Path`: the folder.
        """
        out = self._write(save_directory)
        if push_to_hub:
            self.push_to_hub(repo_id or out.resolve().name, **push_to_hub_kwargs)
        return out

    def _write(self, save_directory: str | os.PathLike) -> Path:
        store = LocalStore(_output_folder(save_directory))
        refs = []
        for ref in self.components:
            tensors = {k: np.asarray(v) for k, v in self.params[ref.slot].items()}
            new = store.write_component(tensors, ref.kind, ref.slot)
            if new.id != ref.id:
                raise ShapeMismatchError(f"{ref.slot}: parameters no longer match component {ref.id}", path=ref.filename)
            refs.append(new)
        store.write_config(self.config)
        store.write_task(replace(self.task_file, components=refs))
        return Path(save_directory)

    def to_transformers(self, save_directory: str | os.PathLike) -> Path:
        """Write this task into the folder `save_directory` as a `ViTForImageClassification` checkpoint +
        `preprocessor_config.json` (needs the `interop` extra: `pip install 'mu2hub[interop]'`)."""
        from ..convert.transformers import write_transformers_checkpoint

        params = {slot: {k: np.asarray(v) for k, v in t.items()} for slot, t in self.params.items()}
        write_transformers_checkpoint(_output_folder(save_directory), self.structure, params, self.labels, self.task_file.preprocessing)
        return Path(save_directory)

    # -- fine-tuning and sharing (mu2hub/train/finetune.py does the work) --------------------------------
    def finetune(self, data: Any, *, steps: int, lr: float, train: str | list[str] = "own", **kwargs: Any) -> "TaskModel":
        """Fine-tune this task on `data` and return a new model; this one is left untouched (clone-on-write).

        Args:
            data: a Hugging Face dataset id (`"user/name"` or `"hf:user/name"`), a local `imagefolder` folder,
                a registered task name, or `TaskData`; label names come from the dataset.
            steps (`int`): SGD steps.
            lr (`float`): peak learning rate.
            train (`str` or `list`, defaults to `"own"`): `"own"` (components this task created, and its head),
                `"all"`, or slots / kinds (`["head", "block.2"]`).
            **kwargs: `batch_size`, `num_validations`, `task`, `seed`, `data_kwargs`, `progress` (see
                `mu2hub.finetune.finetune`).

        Returns:
            `FineTunedModel`: its `save_pretrained` / `push_to_hub` write only the new components; the untouched
            ones are referenced in this model's repo at its pinned revision.

        Example:
            >>> variant = mu2hub.from_pretrained("org/system", task="digits").finetune("my_digits/", steps=200, lr=0.01)
            >>> variant.push_to_hub("me/digits-v2")
        """
        from ..train.finetune import finetune

        return finetune(self, data, steps=steps, lr=lr, train=train, **kwargs)

    def push_to_hub(self, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
                    create_pr: bool = False, commit_message: str | None = None) -> Any:
        """Upload this task to `repo_id`, sending only the files the repo lacks.

        `save_pretrained` into a temporary folder, then the exporter's incremental push (config, task file, the
        components missing there, card and figures); with `create_pr=True` a pull request that only adds files. The
        repo then loads with `TaskModel.from_pretrained(repo_id, task=model.task)`; its model card shows the install
        line and that snippet.

        Args:
            repo_id (`str`): `"org/name"`, created if missing.
            token (`str` or `bool`, *optional*): as in `huggingface_hub`.
            private (`bool`, *optional*): the visibility of a repo this creates.
            create_pr (`bool`, defaults to `False`): open a pull request instead of committing to main.
            commit_message (`str`, *optional*): the commit or pull request title.

        Returns:
            `mu2hub.train.finetune.PushResult`: the files and bytes sent, the commit or the pull request.
        """
        from ..train.finetune import push_model

        return push_model(self, repo_id, token=token, private=private, create_pr=create_pr, commit_message=commit_message)


def preprocess_images(task_file: TaskFile, images: Any) -> np.ndarray:
    """`TaskModel.preprocess` of a task, from its task file alone (the server decodes before any model is loaded)."""
    from ..data.pp import apply_pp_spec_numpy, pp_spec
    from ..data.registry import open_image, to_rgb_uint8

    batch = _as_image_list(images)
    if not batch:
        raise ImageInputError("no images given")
    rgb = []
    for i, image in enumerate(batch):
        is_path = isinstance(image, (str, os.PathLike))
        if is_path and not os.path.isfile(image):
            what = "a folder, not an image file (`mu2hub predict FOLDER` reads one)" if os.path.isdir(image) \
                else "no such image file"
            raise ImageInputError(f"{str(image)!r}: {what}; expected an image: a file path, a PIL image or an "
                                  "array [H, W], [H, W, C] or [N, H, W, C]")
        try:
            rgb.append(open_image(image) if is_path else to_rgb_uint8(image))
        except CorruptImageError:
            raise  # it names its file
        except ImageInputError as e:
            raise ImageInputError(f"image {i}: {e}" if len(batch) > 1 else str(e)) from None
    return apply_pp_spec_numpy(rgb, task_file.preprocessing or pp_spec(task_file.image_size))


def predictions_from_logits(logits: Any, labels: Sequence[str], *, top_k: int = DEFAULT_TOP_K) -> list[list[dict[str, Any]]]:
    """Top-k `{"label", "score"}` per row of `logits`, softmax scores (`TaskModel.predictions` of a task)."""
    check_top_k(top_k)
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1))
    return [[{"label": labels[i], "score": float(row[i])} for i in np.argsort(-row, kind="stable")[:top_k]]
            for row in probs]


def check_top_k(top_k: Any) -> None:
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise ArgumentError(f"top_k must be a positive integer, got {top_k!r}")


def _output_folder(path: str | os.PathLike) -> Path:
    """Where `save_pretrained` / `to_transformers` write: refused before any write when it is a file."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ArgumentError(f"{out}: exists and is not a folder; pass a folder to write into")
    return out


def _as_image_list(images: Any) -> list[Any]:
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def load_task(store: Store, task: str, *, dtype: Any = None, repo_id: str = "", revision: str | None = None,
              device: jax.Device | None = None, subfolder: str | None = None) -> TaskModel:
    """Assemble a TaskModel from any store: read the task file, fetch exactly its components, place them (on `device`)."""
    config = store.read_config()
    tf = store.read_task(task)
    comps = task_components(store, tf)
    params: dict[str, dict[str, jax.Array]] = {}
    for ref in tf.components:
        kind, tensors = comps[ref.id]
        if kind != ref.kind:
            raise ShapeMismatchError(f"{ref.slot} names component {ref.id} of kind {kind!r}", path=tf.filename)
        params[ref.slot] = device_component(ref.id, tensors, device)
    return TaskModel(config, tf, params, repo_id=repo_id or store.name, revision=revision, dtype=dtype,
                     subfolder=subfolder)


def load_from_store(store: Store, task: str, source: str | os.PathLike, *, dtype: Any = None,
                    device: jax.Device | None = None) -> TaskModel:
    """One task of an opened store, pinned to the commit the store resolved (`from_pretrained`'s last step)."""
    return load_task(store, task, dtype=dtype, repo_id=str(source), revision=getattr(store, "commit", None),
                     device=device, subfolder=getattr(store, "subfolder", None))
