"""Mean-Shifted Contrastive (MSC) fine-tuning: adapt a pretrained extractor to a camera's normal frames.

Reiss & Hoshen, "Mean-Shifted Contrastive Loss for Anomaly Detection" (AAAI 2023):

1. Embed every normal image once with the pretrained model, L2-normalise, and
   take the mean direction ``c`` (the "normal mean"); it stays fixed.
2. Each step takes a batch of B images, makes two augmented views of each, and
   embeds both: ``z = normalise(f(x))``. The mean-shifted feature is
   ``s = normalise(z - c)``. The contrastive loss (InfoNCE, temperature 0.25)
   pulls the two views of an image together and pushes the 2B - 2 other views
   of the batch away, on ``s``: so the angles *around the normal mean* spread
   out, instead of every normal image being pushed off the normal cluster as a
   plain contrastive loss on ``z`` does.
3. The angular centre term ``mean(1 - z . c)`` keeps the features close to ``c``.
4. Only the later stages train (``registry.Backbone.trainable``; the paper
   freezes ResNet's conv1..layer2), with a small learning rate. BatchNorm keeps
   its pretrained statistics (eval mode): batches on a CPU are small, and
   batch statistics of B images of one scene would drift.

Afterwards the index is fitted as usual, on the adapted, L2-normalised features
(``spec.adapted_sha256`` marks the spec; ``adapted.py`` loads the weights).

Augmentations, chosen for fixed cameras rather than for object photos:
- small random crops (70-100% of the area, aspect 3/4..4/3): the same scene
  framed slightly differently, as vibration or a re-mounted camera does;
- small rotations (+-5 degrees): a camera that is not quite level;
- colour jitter (brightness, contrast, saturation, a little hue) and, at 10%,
  grayscale: daylight, clouds, lamps, auto-exposure, and night (IR) mode;
- Gaussian blur (30%): focus drift, motion and compression softness.
No horizontal flips (a scene is not symmetric: text, traffic direction), and
nothing that hides local damage: the crops keep most of the frame, so a defect
is in both views, and the views differ by what a normal day changes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import transforms as T

from index_store import adapted
from index_store.backbones import build_trunk
from index_store.embedder import Embedder, pick_device
from index_store.errors import IndexStoreError
from index_store.registry import backbone
from index_store.spec import EmbedderSpec

log = logging.getLogger(__name__)

METHODS = ("msc",)


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune. Paper: SGD lr 1e-5, weight decay 5e-5, 20 epochs, batch 64, temperature 0.25.

    Our default learning rate is larger (1e-4 with momentum 0.9) because a CPU run affords a few
    epochs over a few hundred frames, not 20 over thousands: tens of steps, not thousands.
    """

    epochs: int = 2
    lr: float = 1e-4
    batch: int = 32
    temperature: float = 0.25
    angular: float = 1.0  # weight of the angular centre term
    weight_decay: float = 5e-5
    momentum: float = 0.9
    seed: int = 0
    device: str = "auto"

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FinetuneResult:
    weights: bytes  # safetensors blob of the trained tensors
    spec: EmbedderSpec  # the input spec with adapted_sha256 set
    losses: list[float]  # mean loss per epoch
    seconds: float

    def embedder(self, device: str = "auto", batch_size: int = 32) -> Embedder:
        return Embedder(self.spec, device=device, batch_size=batch_size, adapted=self.weights)


# ------------------------------------------------------------------ the loss


def msc_loss(
    z1: torch.Tensor, z2: torch.Tensor, centre: torch.Tensor, temperature: float = 0.25, angular: float = 1.0
) -> torch.Tensor:
    """MSC loss of two views' raw features ``z1``, ``z2`` (B, D), B >= 2, around the unit ``centre`` (D,)."""
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    s = F.normalize(torch.cat([z1, z2]) - centre, dim=-1)  # (2B, D) mean-shifted
    n = z1.shape[0]
    logits = s @ s.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=s.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(s.device)
    contrastive = F.cross_entropy(logits, positives)
    centre_term = (1 - torch.cat([z1, z2]) @ centre).mean()
    return contrastive + angular * centre_term


# ------------------------------------------------------------------ augmentations


def augmentation(spec: EmbedderSpec) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> one augmented, normalised (3, crop, crop) view (see the module docstring for why)."""
    blur_kernel = max(3, (spec.crop // 20) | 1)
    return T.Compose(
        [
            T.Resize(spec.resize),
            T.RandomRotation(5, interpolation=T.InterpolationMode.BILINEAR),
            T.RandomResizedCrop(spec.crop, scale=(0.7, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.3, 0.05)], p=0.8),
            T.RandomGrayscale(p=0.1),
            T.RandomApply([T.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=0.3),
            T.ToTensor(),
            T.Normalize(spec.mean, spec.std),
        ]
    )


# ------------------------------------------------------------------ training


def trainable_prefixes(spec: EmbedderSpec) -> tuple[str, ...]:
    return backbone(spec.backbone).trainable


def freeze_early(model: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Freeze every parameter outside ``prefixes``; returns the names of those left trainable."""
    trained = []
    for name, p in model.named_parameters():
        p.requires_grad_(any(name == q or name.startswith(q + ".") for q in prefixes))
        if p.requires_grad:
            trained.append(name)
    if not trained:
        raise IndexStoreError(f"no trainable parameters under {prefixes}")
    return trained


def trained_state(model: nn.Module, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Parameters and buffers of the trained stages: what the adapted weights blob holds."""
    return {k: v for k, v in model.state_dict().items() if any(k.startswith(q + ".") for q in prefixes)}


@torch.no_grad()
def normal_centre(model: nn.Module, spec: EmbedderSpec, load: Callable[[int], Image.Image], n: int,
                  device: torch.device, batch: int) -> torch.Tensor:  # fmt: skip
    """The unit mean direction of the L2-normalised features of the normal images (scoring's preprocessing:
    resize, centre crop, normalise; no augmentation)."""
    plain = T.Compose(
        [T.Resize(spec.resize), T.CenterCrop(spec.crop), T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    )
    total = torch.zeros(spec.dim if not spec.is_patch else backbone(spec.backbone).dim, device=device)
    for start in range(0, n, batch):
        x = torch.stack([plain(load(i).convert("RGB")) for i in range(start, min(n, start + batch))]).to(
            device
        )
        total += F.normalize(model(x), dim=-1).sum(0)
    return F.normalize(total / n, dim=0)


def finetune(
    spec: EmbedderSpec,
    load: Callable[[int], Image.Image],
    n: int,
    cfg: FinetuneConfig = FinetuneConfig(),
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``spec``'s backbone with MSC on the ``n`` normal images ``load(0..n-1)``.

    Works for either index kind: training is on the global feature; a patch spec's taps read the
    adapted trunk afterwards. Deterministic on CPU for a given ``cfg.seed``.
    """
    if n < 2:
        raise IndexStoreError(f"MSC fine-tuning needs at least 2 normal images, got {n}")
    if spec.is_adapted:
        raise IndexStoreError(f"{spec.label()} is already fine-tuned")
    device = pick_device(cfg.device)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_trunk(spec).to(device)
        prefixes = trainable_prefixes(spec)
        trained = freeze_early(model, prefixes)
        log.info("MSC: training %d tensors of %s on %d images, %s", len(trained), spec.label(), n, device)
        centre = normal_centre(model, spec, load, n, device, cfg.batch)
        losses = _train(model, centre, spec, load, n, cfg, device, progress)
    blob = adapted.encode(trained_state(model.cpu(), prefixes))
    out = dataclasses.replace(spec, adapted_sha256=adapted.sha256_hex(blob))
    return FinetuneResult(blob, out, losses, time.perf_counter() - t0)


def _train(model: nn.Module, centre: torch.Tensor, spec: EmbedderSpec, load: Callable[[int], Image.Image], n: int,
           cfg: FinetuneConfig, device: torch.device, progress: bool) -> list[float]:  # fmt: skip
    from tqdm import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    augment = augmentation(spec)
    rng = np.random.default_rng(cfg.seed)
    batch = max(2, min(cfg.batch, n))
    losses = []
    model.eval()  # BatchNorm keeps its statistics; gradients still flow to the trainable stages
    for epoch in range(1, cfg.epochs + 1):
        order = rng.permutation(n)
        steps = [order[i : i + batch] for i in range(0, n, batch)]
        steps = [s for s in steps if len(s) >= 2]  # a lone image has no negatives
        bar = tqdm(steps, desc=f"msc epoch {epoch}/{cfg.epochs}", unit="batch", disable=not progress)
        total = 0.0
        for step in bar:
            images = [load(int(i)).convert("RGB") for i in step]
            v1 = torch.stack([augment(im) for im in images]).to(device)
            v2 = torch.stack([augment(im) for im in images]).to(device)
            loss = msc_loss(model(v1), model(v2), centre, cfg.temperature, cfg.angular)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.close()
        losses.append(total / max(1, len(steps)))
        log.info("MSC epoch %d/%d: mean loss %.4f", epoch, cfg.epochs, losses[-1])
    return losses
