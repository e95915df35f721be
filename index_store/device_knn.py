"""Exact kNN on a torch device, for a worker that embeds on a GPU.

``KnnIndex.search`` scans with faiss on the CPU: a CUDA worker's embeddings
leave the device and the flat scan, the slowest step for a patch index
(1e5-1e6 vectors against batch * grid rows, e.g. 32 * 28 * 28), runs on the
host. ``DeviceKnn`` keeps the index's vectors (float32) and their squared
norms on the device and computes ||q||^2 - 2 q.x + ||x||^2, as faiss's flat
index does, one tile of at most ``query_chunk`` x ``base_chunk`` distances at
a time, keeping the k smallest per query; so device memory stays bounded
whatever the index and batch sizes. The (N, k) distances come back to the host
and become scores by ``knn.scores_from_sqdist``, the rule ``KnnIndex.search``
uses: both backends give the same scores (to float32 rounding) and ids.

``searcher_for`` picks the backend of one index for a worker's device.
Arrays or tensors in, arrays out: no Redis, no Kafka.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Union

import numpy as np
import torch

from index_store.knn import KnnIndex, Searcher, as_f32, scores_from_sqdist

log = logging.getLogger(__name__)

QUERY_CHUNK = 4096  # query rows per tile
BASE_CHUNK = 16384  # index rows per tile: a tile of distances is 256 MiB of float32
DEVICE_FRACTION = 0.5  # of the device's free memory an index (and one tile) may take


class DeviceKnn:
    """The vectors of a ``KnnIndex`` on ``device``, searched there by the index's own rule."""

    def __init__(
        self,
        index: KnnIndex,
        device: Union[str, torch.device],
        query_chunk: int = QUERY_CHUNK,
        base_chunk: int = BASE_CHUNK,
    ) -> None:
        if query_chunk < 1 or base_chunk < 1:
            raise ValueError("chunk sizes must be at least 1")
        self.memory, self.k, self.dim, self.size = index.memory, index.k, index.dim, index.size
        self.device = torch.device(device)
        self.query_chunk, self.base_chunk = query_chunk, base_chunk
        self.vectors = torch.from_numpy(index.vectors).to(self.device)  # (M, D) float32
        self.sqnorms = self.vectors.square().sum(dim=1)  # (M,)

    @torch.inference_mode()
    def search(self, embeddings: Union[np.ndarray, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) embeddings -> (N,) float32 scores and (N, k) int64 row numbers of the nearest vectors
        (nearest first); k is capped by the index size, as in ``KnnIndex.search``."""
        q = self._queries(embeddings)
        if q.shape[0] == 0:
            return np.zeros(0, dtype=np.float32), np.zeros((0, self.k), dtype=np.int64)
        dists, ids = [], []
        for start in range(0, q.shape[0], self.query_chunk):
            d, i = self._nearest(q[start : start + self.query_chunk].to(self.device, torch.float32))
            dists.append(d.cpu())
            ids.append(i.cpu())
        return scores_from_sqdist(self.memory, torch.cat(dists).numpy()), torch.cat(ids).numpy()

    def _queries(self, embeddings: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """A 2-D tensor where the embeddings are (moved to the device chunk by chunk, in ``search``)."""
        if isinstance(embeddings, torch.Tensor):
            q = embeddings.detach()
            if q.ndim != 2:
                raise ValueError(f"expected a 2-D array of embeddings, got shape {tuple(q.shape)}")
        else:
            q = torch.from_numpy(as_f32(embeddings))
        if q.shape[1] != self.dim:
            raise ValueError(f"embedding dimension {q.shape[1]} != index dimension {self.dim}")
        return q

    def _nearest(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, D) queries on the device -> (n, min(k, size)) squared distances, ascending, and their rows."""
        k, q_sqnorms = self.k, q.square().sum(dim=1, keepdim=True)
        best: Optional[tuple[torch.Tensor, torch.Tensor]] = None
        for start in range(0, self.size, self.base_chunk):
            rows = slice(start, start + self.base_chunk)
            base, base_sqnorms = self.vectors[rows], self.sqnorms[rows]
            tile = torch.addmm(base_sqnorms, q, base.T, alpha=-2.0).add_(q_sqnorms)  # (n, tile) squared L2
            d, i = tile.topk(min(k, base.shape[0]), dim=1, largest=False)
            i += start
            if best is not None:  # merge with the nearest of the tiles before
                d, i = torch.cat([best[0], d], dim=1), torch.cat([best[1], i], dim=1)
                d, order = d.topk(min(k, d.shape[1]), dim=1, largest=False)
                i = i.gather(1, order)
            best = (d, i)
        assert best is not None, "an index has at least one vector"
        return best


def device_bytes(index: KnnIndex, query_chunk: int = QUERY_CHUNK, base_chunk: int = BASE_CHUNK) -> int:
    """Device memory a DeviceKnn of ``index`` needs: its vectors and norms, plus one chunk of queries
    and one tile of distances while it searches."""
    return 4 * (index.size * (index.dim + 1) + query_chunk * (index.dim + min(base_chunk, index.size)))


def cuda_free_bytes(device: torch.device) -> int:
    return int(torch.cuda.mem_get_info(device)[0])


def searcher_for(
    index: KnnIndex,
    device: Union[str, torch.device],
    fraction: float = DEVICE_FRACTION,
    free_bytes: Callable[[torch.device], int] = cuda_free_bytes,
) -> Searcher:
    """The backend that searches ``index`` for a worker embedding on ``device``.

    The rule: a ``DeviceKnn`` on ``device`` when it is a CUDA device and
    ``device_bytes(index)`` (vectors, norms, one query chunk and one distance
    tile) is at most ``fraction`` of its free memory now (``free_bytes``:
    torch.cuda.mem_get_info); else ``index`` itself, searched by faiss on the
    CPU. So does a device that cannot report its free memory, or that runs out
    while the vectors are copied. Call it where the index is loaded, not on the
    scoring thread: the copy takes time.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return index
    need = device_bytes(index)
    try:
        free = free_bytes(device)
        if need > fraction * free:
            log.info("index of %d vectors stays on faiss-cpu: needs %.0f MiB, %.0f%% of %.0f MiB free on %s is less",
                     index.size, need / 2**20, 100 * fraction, free / 2**20, device)  # fmt: skip
            return index
        searcher = DeviceKnn(index, device)
    except RuntimeError as e:  # CUDA errors, out of memory included
        log.warning("index of %d vectors stays on faiss-cpu: %s: %s", index.size, type(e).__name__, e)
        return index
    log.info("index of %d vectors searched on %s (%.0f MiB)", index.size, device, need / 2**20)
    return searcher
