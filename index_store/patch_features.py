"""Patch features (SPADE / PatchCore): a grid of local descriptors from two intermediate taps.

For each tap (stride 8 and 16): average over each 3x3 neighbourhood (a
location then describes a little more than its own receptive field), resize
to the first tap's grid (bilinear), concatenate along channels, then
optionally project to fewer dimensions with a fixed Gaussian matrix drawn
from ``numpy.random.default_rng(seed)`` (the same on every machine). The
trunk stops once the last tap has run, so the deeper stages cost nothing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from index_store.errors import SpecMismatch


class _TapsDone(Exception):
    """Raised by the last tap's hook to stop the trunk early."""


def projection(in_dim: int, out_dim: int, seed: int) -> torch.Tensor:
    """(out_dim, in_dim) Gaussian random projection scaled by 1/sqrt(out_dim)."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((out_dim, in_dim)) / np.sqrt(out_dim)
    return torch.from_numpy(m.astype(np.float32))


class PatchFeatures(nn.Module):
    """(N, 3, H, W) -> (N, D, H/s, W/s), s = the first tap's stride (8)."""

    def __init__(self, trunk: nn.Module, layers: Sequence[str], proj_dim: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.trunk = trunk
        self.layers = tuple(layers)
        self._maps: dict[str, torch.Tensor] = {}
        # False while exporting (index_store/openvino_runtime.py): torch.export cannot follow the exception;
        # the exported graph keeps only what the taps need, so the deeper stages still cost nothing there
        self.stop_early = True
        modules = dict(trunk.named_modules())
        for name in self.layers:
            if name not in modules:
                raise SpecMismatch(f"the built network has no module {name!r}")
            modules[name].register_forward_hook(self._hook(name))
        self.register_buffer("proj", None)
        with torch.no_grad():
            self.channels = int(self._run(torch.zeros(1, 3, 64, 64)).shape[1])  # before projection
        if proj_dim:
            self.proj = projection(self.channels, proj_dim, seed).view(proj_dim, self.channels, 1, 1)

    def _hook(self, name: str):  # type: ignore[no-untyped-def]
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self._maps[name] = output
            if self.stop_early and len(self._maps) == len(self.layers):
                raise _TapsDone

        return hook

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        self._maps = {}
        try:
            self.trunk(x)
        except _TapsDone:
            pass
        maps = [F.avg_pool2d(self._maps[name], 3, stride=1, padding=1) for name in self.layers]
        self._maps = {}
        size = maps[0].shape[-2:]
        maps = [
            m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            for m in maps
        ]
        return torch.cat(maps, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run(x)
        if self.proj is not None:
            out = F.conv2d(out, self.proj.to(out.dtype))
        return out
