"""Defaults of fitting from a camera's stream, in a module light enough for ``--help`` (no numpy).

``CLEAN_FRACTION`` was measured on a contaminated multi-camera stream
(benchmarks/stream_accuracy.py; docs/accuracy.md says why this value).
"""

DEDUP = 0.25  # drop a frame within this fraction of the mean squared pair distance of a kept one (measured:
# docs/accuracy.md; sensor noise alone moves EfficientNet-Lite0 features 0.2 of it)
MAX_FRAMES = 1000  # frames embedded at most, spread evenly over the period
HOLDOUT_EVERY = 5  # one kept frame in five calibrates the threshold
CLEAN_FRACTION = 0.2
