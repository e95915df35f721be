"""Every Redis key and channel framewatch uses, in one place.

    {p}:indexes                      set of index names
    {p}:index:{name}:next            version counter (INCR)
    {p}:index:{name}:versions        sorted set: version -> created time
    {p}:index:{name}:active          the active version number
    {p}:index:{name}:v:{n}:meta      JSON metadata of version n (immutable)
    {p}:index:{name}:v:{n}:vec:{i}   chunk i of the raw little-endian float32 vectors
    {p}:events                       pub/sub channel: {"name":..., "version":...} on activation
    {p}:worker:{id}:health           a worker's heartbeat (expires)
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

    def meta(self, name: str, version: int) -> str:
        return f"{self.prefix}:index:{name}:v:{version}:meta"

    def chunk(self, name: str, version: int, i: int) -> str:
        return f"{self.prefix}:index:{name}:v:{version}:vec:{i}"

    def health(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}:health"
