"""Prometheus metrics of the worker, all on the registry passed in.

Labelled counters are created at zero for every label value known up front,
so ``rate()``/``increase()`` see the first event. Gauges that describe state
(readiness, stall) are computed at scrape time from the functions the worker
passes in, never set as a side effect of a probe. So are the GPU gauges of a
CUDA worker (``GpuCollector``), which a scrape leaves out when they cannot be read,
and the per-camera alarm rate and drift (``DriftCollector``, from worker/drift.py).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from wire.topics import DEAD_LETTER_REASONS
from worker.drift import DriftTracker

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
# A latency over this is observed as this: a replay of week-old frames is counted (+Inf bucket) without
# pushing the histogram's sum to where float64 can no longer add a 50 ms frame to it.
LATENCY_CAP_S = 7 * 86_400.0
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)
RELOAD_RESULTS = ("loaded", "refused", "error")
STALL_REASONS = ("loop-stuck", "no-progress")
STAGES = ("decode", "score", "publish", "commit")
GPU_UTILIZATION = "framewatch_gpu_utilization"
GPU_MEMORY = "framewatch_gpu_memory_used_bytes"
DRIFT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
ALARM_RATIO_BUCKETS = (0.5, 1, 2, 3, 5, 10)

log = logging.getLogger(__name__)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.consumed = Counter("framewatch_frames_consumed", "Frame messages consumed", registry=r)
        self.scored = Counter(
            "framewatch_frames_scored", "Score records acknowledged by the broker", ["index"], registry=r
        )
        self.dead_letters = Counter(
            "framewatch_dead_letters", "Dead letters acknowledged by the broker", ["reason"], registry=r
        )
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        self.anomalies = Counter("framewatch_anomalies", "Frames over their index threshold", ["source"], registry=r)
        self.batch_size = Histogram(
            "framewatch_batch_size", "Frames per scoring batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r
        )
        self.stage_seconds = Histogram(
            "framewatch_stage_seconds", "Time per pipeline stage per batch", ["stage"], buckets=STAGE_BUCKETS,
            registry=r,
        )  # fmt: skip
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        self.latency = Histogram(
            "framewatch_end_to_end_latency_seconds", "Capture time to score publication", buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.capture_time_replaced = Counter(
            "framewatch_capture_time_replaced",
            "Frames whose capture time was before 2000 or over a day ahead, replaced by the message timestamp",
            registry=r,
        )
        self.decode_budget_bytes = Gauge(
            "framewatch_decode_budget_bytes",
            "Memory the decode pool holds for frames being decoded",
            registry=r,
        )
        self.decode_budget_waiting = Gauge(
            "framewatch_decode_budget_waiting",
            "Frames waiting for decode memory (the budget is full)",
            registry=r,
        )
        self.score = Histogram(
            "framewatch_normalized_score", "Score / threshold of scored frames",
            buckets=(0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2, 5), registry=r,
        )  # fmt: skip
        self.index_version = Gauge(
            "framewatch_index_version", "Version of each index the worker serves", ["index"], registry=r
        )
        self.index_reloads = Counter(
            "framewatch_index_reloads", "Index versions loaded, refused (bad data or spec) or failed (error)",
            ["index", "result"], registry=r,
        )  # fmt: skip
        # candidate versions scored in the shadow (worker/candidates.py): per index, all its candidates together
        # (per version: `framewatch index status`, from Redis counters), so label values stay the served indexes
        self.shadow_scored = Counter(
            "framewatch_shadow_scored", "Candidate-version verdicts on frames, scored in the shadow (no alerts)",
            ["index", "verdict"], registry=r,
        )  # fmt: skip
        self.candidates_held = Gauge("framewatch_candidates", "Candidate versions scored in the shadow", registry=r)
        self.candidates_refused = Counter(
            "framewatch_candidates_refused", "Candidate versions refused (another embedder, malformed data)",
            ["index"], registry=r,
        )  # fmt: skip
        self.reconnects = Counter("framewatch_reconnects", "Reconnections to a dependency", ["dependency"], registry=r)
        for dependency in ("kafka", "redis"):
            self.reconnects.labels(dependency)
        self.lag = Gauge("framewatch_consumer_lag", "Messages behind the log end", ["topic", "partition"], registry=r)
        self.ready = Gauge("framewatch_ready", "1 when the worker serves: index loaded, broker reachable, no stall",
                           registry=r)  # fmt: skip
        self.paused = Gauge(
            "framewatch_consumption_paused", "1 while consumption is held (no index yet, or outputs unacknowledged)",
            registry=r,
        )  # fmt: skip
        self.stalled = Gauge(
            "framewatch_stalled", "1 while the progress watchdog sees no progress (see /readyz)", registry=r
        )
        self.watchdog_trips = Counter(
            "framewatch_watchdog_trips", "Times the progress watchdog found the worker stalled", ["reason"], registry=r
        )
        for reason in STALL_REASONS:
            self.watchdog_trips.labels(reason)
        self.index_missing = Gauge(
            "framewatch_index_missing", "1 while the version served is gone from Redis (flushed, evicted, deleted): "
            "the worker scores with the copy it holds", ["index"], registry=r,
        )  # fmt: skip
        self.eviction_unsafe = Gauge(
            "framewatch_redis_eviction_unsafe", "1 while Redis's maxmemory-policy could evict index keys (allkeys-*)",
            registry=r,
        )  # fmt: skip
        self.frames_skipped = Counter(
            "framewatch_frames_skipped", "Frames a start position passed over: records published before the worker "
            "started, in a partition without a committed offset (--start-from latest)", registry=r,
        )  # fmt: skip
        self.pending_outputs = Gauge(
            "framewatch_pending_outputs", "Score records and dead letters sent but not yet acknowledged", registry=r
        )

    def observe_latency(self, seconds: float) -> None:
        """One frame's end-to-end latency, within [0, LATENCY_CAP_S]; NaN (never expected) is not observed."""
        if seconds == seconds:
            self.latency.observe(min(max(seconds, 0.0), LATENCY_CAP_S))

    def decode_budget(self, in_use: Callable[[], int], waiting: Callable[[], int]) -> None:
        """The decode budget's gauges, read at scrape time."""
        self.decode_budget_bytes.set_function(lambda: float(in_use()))
        self.decode_budget_waiting.set_function(lambda: float(waiting()))

    def index_state(self, names: list[str], missing: Callable[[str], bool], eviction_unsafe: Callable[[], bool]) -> None:
        """Gauges of what Redis holds, read at scrape time."""
        for name in names:
            self.index_missing.labels(name).set_function(lambda name=name: 1.0 if missing(name) else 0.0)  # type: ignore[misc]
        self.eviction_unsafe.set_function(lambda: 1.0 if eviction_unsafe() else 0.0)

    def known_indexes(self, names: list[str]) -> None:
        for name in names:
            for result in RELOAD_RESULTS:
                self.index_reloads.labels(name, result)

    def computed(self, ready: Callable[[], bool], stalled: Callable[[], bool], paused: Callable[[], bool],
                 pending: Callable[[], int]) -> None:  # fmt: skip
        """State gauges read at scrape time."""
        self.ready.set_function(lambda: 1.0 if ready() else 0.0)
        self.stalled.set_function(lambda: 1.0 if stalled() else 0.0)
        self.paused.set_function(lambda: 1.0 if paused() else 0.0)
        self.pending_outputs.set_function(lambda: float(pending()))


class GpuCollector(Collector):
    """framewatch_gpu_utilization (percent, 0-100) and framewatch_gpu_memory_used_bytes, read at scrape time.

    A reader that raises (utilisation needs NVML through the nvidia-ml-py
    package, which an image may lack) leaves its gauge out of that scrape, with
    one warning in the log: the scrape itself never fails.
    """

    def __init__(self, utilization: Callable[[], float], memory_used: Callable[[], float]) -> None:
        self.gauges = (
            (GPU_UTILIZATION, "Percent of the last sample period the GPU was busy (NVML)", utilization),
            (GPU_MEMORY, "Bytes of GPU memory held by this worker's tensors (torch.cuda.memory_allocated)",
             memory_used),
        )  # fmt: skip
        self._warned: set[str] = set()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The names, without reading the GPU (so registering does not call the readers)."""
        for name, doc, _ in self.gauges:
            yield GaugeMetricFamily(name, doc)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, doc, read in self.gauges:
            try:
                value = float(read())
            except Exception as e:  # noqa: BLE001 - a metric must never break /metrics
                if name not in self._warned:
                    self._warned.add(name)
                    log.warning("%s not exported: %s: %s", name, type(e).__name__, e)
                continue
            yield GaugeMetricFamily(name, doc, value=value)


def gpu_metrics(
    registry: CollectorRegistry,
    device: Any,
    utilization: Optional[Callable[[], float]] = None,
    memory_used: Optional[Callable[[], float]] = None,
) -> Optional[GpuCollector]:
    """Register the GPU gauges when ``device`` (a torch.device or its name) is CUDA; None otherwise.

    The readers default to ``torch.cuda.utilization(device)`` and
    ``torch.cuda.memory_allocated(device)``; tests pass their own.
    """
    if str(device).split(":")[0] != "cuda":
        return None

    def read_utilization() -> float:
        import torch

        return float(torch.cuda.utilization(device))

    def read_memory() -> float:
        import torch

        return float(torch.cuda.memory_allocated(device))

    collector = GpuCollector(utilization or read_utilization, memory_used or read_memory)
    registry.register(collector)
    return collector


class DriftCollector(Collector):
    """Per-camera alarm rate and drift, computed from the tracker at scrape time.

    Label cardinality is bounded: at most ``tracker.cfg.labelled`` sources get their own
    ``source`` label (the worst, sticky: worker/drift.py). Every tracked source, labelled or
    not, is counted in two gauge histograms (drift, and alarm rate as a multiple of target),
    so a fleet of thousands of cameras still shows how many drift. A source that ages out of
    the window simply stops being collected: its labelled series disappear.
    """

    LABELLED = (
        ("framewatch_source_alarm_rate", "Share of the source's frames in the drift window over the threshold",
         lambda d: d.alarm_rate),
        ("framewatch_source_target_fpr", "False-alarm rate the source's index was calibrated for",
         lambda d: d.target_fpr),
        ("framewatch_source_drift", "KS distance of the source's normalised scores from the calibration scores "
         "(0 = as calibrated, 1 = disjoint); absent below the minimum frames", lambda d: d.drift),
        ("framewatch_source_window_frames", "Frames of the source in the drift window", lambda d: d.frames),
    )  # fmt: skip

    def __init__(self, tracker: DriftTracker) -> None:
        self.tracker = tracker

    def describe(self) -> Iterator[Any]:
        for name, doc, _ in self.LABELLED:
            yield GaugeMetricFamily(name, doc, labels=["source"])
        yield GaugeMetricFamily("framewatch_drift_sources", "Sources in the drift window (labelled or not)")
        yield GaugeHistogramMetricFamily("framewatch_sources_by_drift", "Sources by drift")
        yield GaugeHistogramMetricFamily(
            "framewatch_sources_by_alarm_ratio", "Sources by alarm rate / target"
        )

    def collect(self) -> Iterator[Any]:
        chosen, everything = self.tracker.labelled()
        for name, doc, read in self.LABELLED:
            family = GaugeMetricFamily(name, doc, labels=["source"])
            for d in chosen:
                value = read(d)
                if value is not None:
                    family.add_metric([d.source], float(value))
            yield family
        yield GaugeMetricFamily("framewatch_drift_sources", "Sources in the drift window (labelled or not)",
                                value=len(everything))  # fmt: skip
        drifts = [d.drift for d in everything if d.drift is not None]
        yield _spread(
            "framewatch_sources_by_drift", "Sources by drift (all tracked sources)", drifts, DRIFT_BUCKETS
        )
        ratios = [d.alarm_ratio for d in everything]
        yield _spread("framewatch_sources_by_alarm_ratio", "Sources by alarm rate / target (all tracked sources)",
                      ratios, ALARM_RATIO_BUCKETS)  # fmt: skip


def _spread(
    name: str, doc: str, values: list[float], bounds: tuple[float, ...]
) -> GaugeHistogramMetricFamily:
    buckets = [(str(float(b)), float(sum(1 for v in values if v <= b))) for b in bounds]
    return GaugeHistogramMetricFamily(name, doc, buckets=[*buckets, ("+Inf", float(len(values)))],
                                      gsum_value=float(sum(values)))  # fmt: skip


def drift_metrics(registry: CollectorRegistry, tracker: DriftTracker) -> DriftCollector:
    """Register the per-camera alarm rate and drift of ``tracker`` on ``registry``."""
    collector = DriftCollector(tracker)
    registry.register(collector)
    return collector


CAMERA_LOAD_RESULTS = ("loaded", "missing", "refused", "error")
FALLBACK_REASONS = ("missing", "loading", "refused", "error")


class CameraIndexMetrics:
    """Per-camera indexes (``--route 'PATTERN={source}'``, worker/camera_indexes.py), with no index label:
    thousands of cameras must not mean thousands of series. The counts are aggregated; the camera of a
    refused index is named in the log and on /readyz, not in a label."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.loads = Counter("framewatch_camera_index_loads", "Per-camera index loads by result (missing: the "
                             "camera has no index of its own; its frames go to the fallback)", ["result"], registry=r)  # fmt: skip
        for result in CAMERA_LOAD_RESULTS:
            self.loads.labels(result)
        self.evictions = Counter("framewatch_camera_index_evictions",
                                 "Per-camera indexes evicted to keep within --index-memory (reloaded on demand)",
                                 registry=r)  # fmt: skip
        self.load_seconds = Histogram("framewatch_camera_index_load_seconds", "Time to load one per-camera index "
                                      "from Redis (on the loader thread)", buckets=STAGE_BUCKETS, registry=r)  # fmt: skip
        self.fallback = Counter("framewatch_frames_fallback", "Frames of a per-camera route scored by the fallback "
                                "index (--index), by why", ["reason"], registry=r)  # fmt: skip
        for reason in FALLBACK_REASONS:
            self.fallback.labels(reason)
        self.held = Gauge("framewatch_camera_indexes_held", "Per-camera indexes held in memory", registry=r)
        self.held_bytes = Gauge("framewatch_camera_index_bytes", "Memory the held per-camera indexes take "
                                "(vectors and search copies)", registry=r)  # fmt: skip
        self.budget = Gauge("framewatch_camera_index_budget_bytes", "--index-memory", registry=r)
        self.absent = Gauge("framewatch_camera_indexes_absent", "Cameras seen whose own index is missing or "
                            "refused (scored by the fallback)", registry=r)  # fmt: skip

    def state(self, held: Callable[[], int], held_bytes: Callable[[], int], budget: int,
              absent: Callable[[], int]) -> None:  # fmt: skip
        """Gauges read at scrape time."""
        self.held.set_function(lambda: float(held()))
        self.held_bytes.set_function(lambda: float(held_bytes()))
        self.budget.set(budget)
        self.absent.set_function(lambda: float(absent()))
