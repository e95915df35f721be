"""How ``framewatch learn`` fits one camera: ``index fit --from-topic``'s path, on the frames the service saw.

The service noted where the camera's frames are as it consumed them (offset and
timestamp, ``learning.tracker``); here those are sampled (``--max-frames``,
spread evenly), fetched back by offset from the camera's partition
(``stream_frames.sample_located``: only the range the picked frames span is
read, no scan of the topic to locate them), decoded as the worker decodes,
embedded, de-duplicated, split, cleaned and calibrated (``stream_fit.fit_stream``)
and published: a candidate, or the active version with ``--activate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from wire.errors import FramewatchError
from wire.settings import KafkaSettings

log = logging.getLogger("framewatch.learn")


@dataclass(frozen=True)
class CameraFitter:
    """Fits a camera from ``args``' model flags (those of ``index fit``); called on the service's fit thread."""

    args: argparse.Namespace
    kafka: KafkaSettings
    topic: str
    repo: Any  # IndexRepository

    def __call__(self, cam: Any) -> int:
        """Fit and publish ``cam`` (a ``learning.tracker.Camera``); the version published.

        :raises FramewatchError: the frames cannot be read, or the fit or the publish fails.
        """
        from framewatch.index_safety import fit_precision
        from framewatch.stream_frames import sample_located
        from framewatch.topic_fit_cmd import stream_fit_config, stream_spec
        from framewatch.topic_frames import Located, Period
        from index_store.embedder import Embedder
        from index_store.spec import default_spec
        from index_store.stream_fit import fit_stream

        args = self.args
        spec = stream_spec(args, args.weights or default_spec(args.backbone).weights)
        # the precision `index fit` gives a new index here (bf16 on CPUs with it), so the worker serving the
        # fallback index fit by `index fit` serves these too (one spec per worker)
        precision = fit_precision(self.repo, cam.index, getattr(args, "precision", None),
                                  getattr(args, "runtime", None), args.device)  # fmt: skip
        if precision == "int8":
            raise FramewatchError("--precision int8 is not offered by framewatch learn (fit from a stream); "
                                  "use fp32 or bf16")  # fmt: skip
        spec = dataclasses.replace(spec, precision=precision)
        embedder = Embedder(spec, device=args.device, batch_size=args.batch_size, **(
            {"runtime": args.runtime} if getattr(args, "runtime", None) else {}))  # fmt: skip  # a new one: the full
        # view's input shape follows each camera's first frame
        located = [Located(offset, ts) for offset, ts in cam.located()]
        period = Period(since_s=max(cam.span_s, 1.0))
        sample = sample_located(self.kafka, self.topic, cam.source, cam.partition, located, period, embedder,
                                args.max_frames)  # fmt: skip
        result = fit_stream(cam.index, sample.feats, sample.origins, embedder.spec.to_dict(),
                            stream_fit_config(args), args.dedup, None, sample.coordinates())  # fmt: skip
        meta = dataclasses.replace(
            result.meta, calibration={**result.meta.calibration, "learned_by": "framewatch learn"}
        )
        meta = self.repo.publish(meta, result.index, activate=args.activate, candidate=not args.activate)
        log.info("learned %r: index %r version %d (%s), %d frames of %d seen over %.0fs, %d fitted, threshold %.4g",
                 cam.source, meta.name, meta.version, "active" if args.activate else "candidate", sample.located,
                 cam.seen, cam.span_s, result.counts["train"], meta.threshold)  # fmt: skip
        return int(meta.version)
