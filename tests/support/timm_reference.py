"""Run in a subprocess by tests/convert/test_roots.py: a random-initialised timm ViT, saved as timm saves Hub repos,
and its logits.

Why a subprocess with its own sys.path: timm imports torchvision, and the only torchvision on PyPI for torch 2.13
is built against CUDA torch, whose `import` breaks beside the CPU torch pinned here — and a torchvision in the
test environment makes transformers try (and fail) to import it too. So the Makefile installs timm + torchvision
with `--no-deps --target .venv/timm-site`, and only this script puts that folder on its path. torchvision 0.28
registers fake kernels for two C++ ops (`nms`, `qnms`) whose schemas come from its C extension; that extension
cannot load against the CPU torch, so the schemas are declared here first (ViTs never call either op).

    python tests/support/timm_reference.py OUT_DIR '[{"architecture": "vit_tiny_patch16_224", "model_args": {...}}, ...]'
writes, for the i-th spec, OUT_DIR/i/ckpt/{config.json, model.safetensors} (timm.models.save_for_hf) and
OUT_DIR/i/reference.npz (images NHWC in [-1, 1], timm's logits).
"""

import json
import sys


def import_timm():
    try:
        import timm
    except RuntimeError as e:  # torchvision's fake-kernel registration for ops its extension would define
        if "torchvision::" not in str(e):
            raise
        for name in [m for m in sys.modules if m.split(".")[0] in ("torchvision", "timm")]:
            del sys.modules[name]
        import torch

        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import_timm.lib = lib  # keep the definitions alive
        import timm
    return timm


def main(out: str, specs: str) -> None:
    for i, cfg in enumerate(json.loads(specs)):
        reference(f"{out}/{i}", cfg)


def reference(out: str, cfg: dict) -> None:
    import numpy as np
    import torch

    timm = import_timm()
    torch.manual_seed(cfg.get("seed", 0))
    model = timm.create_model(cfg["architecture"], pretrained=False, **cfg["model_args"]).eval()
    with torch.no_grad():  # random init leaves LayerNorms at 1/0 and cls small: perturb everything so each tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    timm.models.save_for_hf(model, f"{out}/ckpt", safe_serialization=True)
    size = model.patch_embed.img_size[0]
    images = np.random.default_rng(1).uniform(-1, 1, (4, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    np.savez(f"{out}/reference.npz", images=images, logits=logits)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
