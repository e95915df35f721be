"""A multi-camera stream of fixed scenes, for learning each camera from its own frames.

Each camera looks at its own variant of the demo's loading bay
(framewatch/demo_scene.py): mirrored or not, its own tint and brightness, and a
fixture of its own (a pole, a window, a sign) drawn at its own place. Per camera:

- ``learn``: the learning period, in time order: normal frames (the crate moves,
  the light varies, the camera shakes) with ``contamination`` of anomalous frames
  (a person, a ball, a ladder or smoke pasted in, blended at ``alpha``) at random places, and one
  static stretch (the same frame with fresh sensor noise only, like a quiet
  night) of ``static`` frames;
- ``test``: later normal and anomalous frames, labelled;
- ``clean``: a folder's worth of normal frames of the same scene (what an
  operator would hand-pick), for the comparison.

``EventScene``: one camera's bay for events rather than single frames (issue 20's evaluation,
benchmarks/eval_incidents.py, tests/integration/test_incidents.py): a person walking across it, the
camera turned to face elsewhere (a crop of evaluation/wide_camera.py's yard), the light dimmed.

Deterministic for a seed. PIL images in memory; ``png`` encodes one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# The demo scene's drawing functions; the benchmark reuses them rather than drawing a scene of its own.
from framewatch.demo_scene import H, W, _background, _normal, _paste_anomaly


@dataclass
class CameraStream:
    name: str
    learn: list[Image.Image] = field(default_factory=list)
    learn_anomalous: list[bool] = field(default_factory=list)
    learn_static: list[bool] = field(default_factory=list)  # in the static stretch
    test: list[Image.Image] = field(default_factory=list)
    test_anomalous: list[bool] = field(default_factory=list)
    clean: list[Image.Image] = field(default_factory=list)


def camera_background(cam: int, rng: np.random.Generator) -> Image.Image:
    """The demo background made into camera ``cam``'s own scene."""
    bg = _background(rng)
    if cam % 2:
        bg = bg.transpose(Image.FLIP_LEFT_RIGHT)
    arr = np.asarray(bg).astype(np.float32)
    tint = np.array([[1.0, 1.0, 1.0], [1.1, 1.0, 0.85], [0.85, 0.95, 1.1], [0.8, 0.8, 0.8]])[cam % 4]
    bg = Image.fromarray(np.clip(arr * tint, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(bg)
    x = 40 + (cam * 67) % 220
    if cam % 3 == 0:
        d.rectangle([x, 20, x + 8, 200], fill=(70, 70, 75))  # a pole
    elif cam % 3 == 1:
        d.rectangle([x, 70, x + 50, 110], fill=(170, 200, 220), outline=(60, 60, 60), width=3)  # a window
    else:
        d.rectangle([x, 95, x + 60, 120], fill=(20, 110, 60))  # a sign
        d.text((x + 6, 100), "EXIT", fill=(255, 255, 255))
    return bg


def camera_stream(cam: int, contamination: float, n_learn: int = 300, static: int = 60, n_test_normal: int = 100,
                  n_test_anomalies: int = 25, n_clean: int = 240, seed: int = 0, alpha: float = 1.0) -> CameraStream:  # fmt: skip
    """``alpha`` < 1 blends each pasted object into the frame (a fainter anomaly, harder to tell)."""
    rng = np.random.default_rng(seed * 1000 + cam)
    bg = camera_background(cam, rng)
    out = CameraStream(f"cam-{cam}")
    anomalous = np.zeros(n_learn, dtype=bool)
    anomalous[rng.choice(n_learn, int(round(contamination * n_learn)), replace=False)] = True
    start = int(rng.integers(0, n_learn - static))
    still = _normal(bg, rng)
    for i in range(n_learn):
        if start <= i < start + static and not anomalous[i]:
            frame = _noisy(still, rng)  # the quiet stretch: nothing moves
        else:
            frame = _normal(bg, rng)
        if anomalous[i]:
            frame = _anomalous(frame, rng, alpha)
        out.learn.append(frame)
    out.learn_anomalous = anomalous.tolist()
    out.learn_static = [start <= i < start + static and not anomalous[i] for i in range(n_learn)]
    labels = [False] * n_test_normal + [True] * n_test_anomalies
    for j in rng.permutation(len(labels)):
        frame = _normal(bg, rng)
        out.test.append(_anomalous(frame, rng, alpha) if labels[j] else frame)
        out.test_anomalous.append(labels[j])
    out.clean = [_normal(bg, rng) for _ in range(n_clean)]
    return out


def _anomalous(frame: Image.Image, rng: np.random.Generator, alpha: float) -> Image.Image:
    pasted = _paste_anomaly(frame, int(rng.integers(0, 4)), rng)
    return pasted if alpha >= 1.0 else Image.blend(frame, pasted, alpha)


def _noisy(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, 3, (img.height, img.width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class EventScene:
    """The loading bay of one camera: normal frames, an intruder crossing it, the camera turned away, dimmed."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.bg = _background(self.rng)
        self.elsewhere = _turned_view(seed)

    def normal(self, gain: float = 1.0) -> Image.Image:
        frame = _normal(self.bg, self.rng)
        return frame if gain == 1.0 else _dim(frame, gain)

    def intruder(self, step: int, steps: int) -> Image.Image:
        """A person walking across the bay, left to right, at ``step`` of ``steps``."""
        from evaluation.wide_camera import _person

        frame = self.normal()
        x = int(10 + (W - 50) * step / max(1, steps - 1))
        same = np.random.default_rng(7)  # the same person in every frame
        _person(ImageDraw.Draw(frame), x - 4, 110, 80, same)
        return frame

    def turned(self) -> Image.Image:
        """The camera turned to face elsewhere (the yard), with the usual light and shake."""
        return _normal(self.elsewhere, self.rng)


def _turned_view(seed: int) -> Image.Image:
    from evaluation.wide_camera import background

    yard = Image.fromarray(np.clip(background(seed), 0, 255).astype(np.uint8))
    return yard.crop((300, 100, 300 + 640, 100 + 480)).resize((W, H))


def _dim(frame: Image.Image, gain: float) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(frame).astype(np.float32) * gain, 0, 255).astype(np.uint8))


def light_ramp(n: int, end: float) -> list[float]:
    """The light's level over ``n`` frames, falling linearly from 1 to ``end``."""
    return [1.0 + (end - 1.0) * (i + 1) / n for i in range(n)]
