"""Global regions: a whole-frame global index's feature map pooled over a grid of regions.

DN2 pools the backbone's last feature map into one vector. Over a whole 16:9
camera frame that vector is dominated by the scene, so an intruder filling a
few percent of the frame moves it little (82.5 ROC-AUC for intruders in the
side bands, 64.0 for small ones, on the wide-camera set). Pooling the same map
over R x C regions instead gives R*C vectors per frame from the same single
forward pass; each is L2-normalised and compared with the normal vectors of its
own region (a positional memory of radius 0, index_store/positional.py), and
the frame scores as its worst region. 4x6 takes those cases to 97.6 and 95.1
(docs/accuracy.md). The region scores are a coarse anomaly map over the frame,
so the record gets a hotspot too. With tiles, each tile is pooled over the
regions and the grids are laid side by side like patch grids (embedder.py).

(N, 3, H, W) -> (N, D, R, C): the backbone's global average pool is replaced by
an adaptive average pool to (R, C), flattened the way the backbone flattens
its pooled vector, then reshaped back to the grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from index_store.errors import SpecMismatch

POOL_ATTRS = ("global_pool", "avgpool")  # timm, torchvision


class RegionPool(nn.Module):
    """Stands in for a backbone's global average pool: (N, D, h, w) -> (N, D*R*C)."""

    def __init__(self, grid: tuple[int, int]) -> None:
        super().__init__()
        self.grid = tuple(grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, self.grid).flatten(1)


class RegionFeatures(nn.Module):
    """(N, 3, H, W) -> (N, D, R, C) L2-normalised region vectors from one pass of ``trunk``."""

    def __init__(self, trunk: nn.Module, grid: tuple[int, int], dim: int) -> None:
        super().__init__()
        for attr in POOL_ATTRS:
            if isinstance(getattr(trunk, attr, None), nn.Module):
                setattr(trunk, attr, RegionPool(grid))
                break
        else:
            raise SpecMismatch(f"{type(trunk).__name__} has no global pool to pool over regions")
        self.trunk, self.grid, self.dim = trunk, tuple(grid), dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trunk(x).reshape(x.shape[0], self.dim, *self.grid)
        return F.normalize(out, dim=1)
