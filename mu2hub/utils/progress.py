"""Every progress bar of mu2hub comes from here: huggingface_hub's tqdm, so `HF_HUB_DISABLE_PROGRESS_BARS=1` (or
`huggingface_hub.utils.disable_progress_bars()`) silences all of them, ours and the downloads'."""

from __future__ import annotations

from typing import Any


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar (`tqdm.auto` underneath: notebooks get the widget) that huggingface_hub's switch turns off."""
    from huggingface_hub.utils import tqdm

    return tqdm(iterable, **kwargs)


def byte_bar(total: int, desc: str, *, disable: bool | None = None) -> Any:
    """One progress bar over bytes."""
    return progress_bar(total=total, unit="B", unit_scale=True, desc=desc, disable=disable)


def progress_write(message: str) -> None:
    """Print a line above the bars without breaking them."""
    from huggingface_hub.utils import tqdm

    tqdm.write(message)


def forwarding_class(shared: Any) -> type:
    """A tqdm class for `hf_hub_download` that feeds one aggregate bar instead of drawing one bar per file."""
    from huggingface_hub.utils import tqdm

    class _Forward(tqdm):
        def __init__(self, *args: Any, **kwargs: Any):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n: int = 1) -> None:
            shared.update(n)

    return _Forward
