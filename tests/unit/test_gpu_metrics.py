"""GPU gauges on /metrics: read at scrape time on a CUDA worker, absent on a CPU one, and left out
(never a failed scrape) when the GPU cannot be read (utilisation needs NVML)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from worker.metrics import GPU_MEMORY, GPU_UTILIZATION, gpu_metrics


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_a_cuda_worker_exports_utilisation_and_memory_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    readings = iter([37.0, 64.0])
    memory = [1 << 30]
    assert gpu_metrics(registry, "cuda:0", lambda: next(readings), lambda: memory[0]) is not None
    assert scrape(registry) == {GPU_UTILIZATION: 37.0, GPU_MEMORY: float(1 << 30)}
    memory[0] = 5
    assert scrape(registry) == {GPU_UTILIZATION: 64.0, GPU_MEMORY: 5.0}


def test_a_cpu_worker_exports_no_gpu_gauges() -> None:
    registry = CollectorRegistry()

    def never() -> float:
        raise AssertionError("a CPU worker must not read the GPU")

    assert gpu_metrics(registry, "cpu", never, never) is None
    assert scrape(registry) == {}


def test_a_reader_that_raises_leaves_its_gauge_out_of_the_scrape() -> None:
    registry = CollectorRegistry()

    def no_nvml() -> float:
        raise ModuleNotFoundError("nvidia-ml-py does not seem to be installed")

    gpu_metrics(registry, "cuda", no_nvml, lambda: 2048)
    assert scrape(registry) == {GPU_MEMORY: 2048.0}
    broken = CollectorRegistry()
    gpu_metrics(broken, "cuda", no_nvml, no_nvml)
    assert scrape(broken) == {}
