"""Every Redis key and channel framewatch uses, in one place.

{p}:indexes                      set of index names
{p}:index:{name}:next            version counter (INCR)
{p}:index:{name}:versions        sorted set: version -> created time
{p}:index:{name}:active          the active version number
{p}:index:{name}:v:{n}:meta      JSON metadata of version n (immutable)
{p}:index:{name}:v:{n}:vec:{i}   chunk i of the raw little-endian float32 vectors
{p}:index:{name}:v:{n}:adapted:{i}  chunk i of the version's adapted (fine-tuned) weights, safetensors;
                                 their sha256 is the spec's adapted_sha256 (index_store/adapted.py)
{p}:index:{name}:v:{n}:int8:{i}  chunk i of the version's int8 model (an OpenVINO IR in safetensors; its
                                 sha256 is the spec's quantized_sha256, index_store/openvino_runtime.py)
{p}:index:{name}:candidates      set of versions published as candidates, not yet promoted
{p}:index:{name}:v:{n}:verdicts:{hour}  hash: "{minute}:scored|alarms|active" -> frames version n scored in that
                                 minute (epoch minutes; hour = minute // 60), how many it called anomalous, and how
                                 many of those same frames the active version called anomalous; added to by every
                                 worker (HINCRBY), expires after two days (index_store/repository.py, index status)
{p}:events                       pub/sub channel: {"name":..., "version":...} on activation, and
                                 {"name":..., "version":..., "candidate": true} when a candidate is published
{p}:worker:{id}:health           a worker's heartbeat (JSON, expires; worker/heartbeat.py)
{p}:index:{name}:review          hash: frame id -> JSON answer from the review page
                                 ({"label": "normal"|"confirmed", "by", "at", ...})
{p}:index:{name}:review:incidents  hash: incident id -> JSON answer for a whole incident ("normal": the frames
                                 it absorbed and the version; "confirmed": the frames it covered)
{p}:learn:cameras                hash: camera (source id) -> JSON progress of `framewatch learn` (learning,
                                 fitting, fitted with its index and version, failed with the error)
{p}:index:{name}:review:lock     held (with an expiry) while marked frames are absorbed: one absorption at a
                                 time per index, across review pages and `index add` (review/marking.py)
"""

from __future__ import annotations


class Keys:
    def __init__(self, prefix: str = "framewatch") -> None:
        self.prefix = prefix

    @property
    def names(self) -> str:
        return f"{self.prefix}:indexes"

    @property
    def events(self) -> str:
        return f"{self.prefix}:events"

    def counter(self, name: str) -> str:
        return f"{self.prefix}:index:{name}:next"

    def versions(self, name: str) -> str:
        return f"{self.prefix}:index:{name}:versions"

    def active(self, name: str) -> str:
        return f"{self.prefix}:index:{name}:active"

    def candidates(self, name: str) -> str:
        return f"{self.prefix}:index:{name}:candidates"

    def meta(self, name: str, version: int) -> str:
        return f"{self.prefix}:index:{name}:v:{version}:meta"

    def chunk(self, name: str, version: int, i: int) -> str:
        return f"{self.prefix}:index:{name}:v:{version}:vec:{i}"

    def adapted_chunk(self, name: str, version: int, i: int) -> str:
        return f"{self.prefix}:index:{name}:v:{version}:adapted:{i}"

    def quantized_chunk(self, name: str, version: int, i: int) -> str:
        return f"{self.prefix}:index:{name}:v:{version}:int8:{i}"

    def health(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}:health"

    @property
    def health_pattern(self) -> str:
        """SCAN pattern matching every worker's health key."""
        return f"{self.prefix}:worker:*:health"

    @property
    def learn_cameras(self) -> str:
        return f"{self.prefix}:learn:cameras"

    def review(self, name: str) -> str:
        return f"{self.prefix}:index:{name}:review"

    def review_incidents(self, name: str) -> str:
        return f"{self.prefix}:index:{name}:review:incidents"

    def review_lock(self, name: str) -> str:
        return f"{self.prefix}:index:{name}:review:lock"

    def verdicts(self, name: str, version: int, hour: int) -> str:
        return f"{self.prefix}:index:{name}:v:{version}:verdicts:{hour}"
