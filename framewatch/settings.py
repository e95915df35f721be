"""Settings from the environment and an optional TOML file, read in one place at start-up.

Precedence, highest first: command-line flags, environment variables, the config file.
The file (``--config FILE`` or ``FRAMEWATCH_CONFIG``) uses the same keys as the
environment variables, either spelled exactly (``FRAMEWATCH_KAFKA = "kafka:9092"``)
or in lower case without the prefix (``kafka = "kafka:9092"``)::

    kafka = "kafka-0.kafka:9092,kafka-1.kafka:9092"
    redis = "rediss://redis.internal:6380/0"
    kafka_security_protocol = "SASL_SSL"
    kafka_sasl_mechanism = "SCRAM-SHA-512"
    kafka_sasl_username = "framewatch"
    topic_scores = "scores.dock"

``effective_environment`` merges the file under the environment, and every other
function here takes that merged mapping, so commands never read ``os.environ`` themselves.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Optional

from wire.errors import FramewatchError
from wire.settings import KAFKA_CLIENTS, KafkaSettings, RedisSettings
from wire.topics import AlertTopics, Topics

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PREFIX = "FRAMEWATCH_"
CONFIG_VAR = "FRAMEWATCH_CONFIG"

ENV_VARS = {
    "FRAMEWATCH_KAFKA": "Kafka bootstrap servers, HOST:PORT[,HOST:PORT]",
    "FRAMEWATCH_REDIS": "Redis URL, redis://[:password@]host:port/db (rediss:// for TLS)",
    "FRAMEWATCH_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL",
    "FRAMEWATCH_KAFKA_SASL_MECHANISM": "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512",
    "FRAMEWATCH_KAFKA_SASL_USERNAME": "SASL user",
    "FRAMEWATCH_KAFKA_SASL_PASSWORD": "SASL password (never logged)",
    "FRAMEWATCH_KAFKA_SSL_CAFILE": "CA bundle for SSL",
    "FRAMEWATCH_KAFKA_CLIENT": "the worker's Kafka consumer: kafka-python (default) | confluent",
    "FRAMEWATCH_REDIS_CA": "CA bundle for rediss://",
    "FRAMEWATCH_TOPIC_FRAMES": "input topic (default frames)",
    "FRAMEWATCH_TOPIC_SCORES": "output topic (default scores)",
    "FRAMEWATCH_TOPIC_DLQ": "dead-letter topic (default frames.dlq)",
    "FRAMEWATCH_TOPIC_ALERTS_DLQ": "alerts no sink could take (default alerts.dlq)",
    "FRAMEWATCH_TOPIC_INCIDENTS": "incidents the alerter opens and closes (default incidents)",
    "FRAMEWATCH_ALERT_WEBHOOKS": "framewatch alert: webhook URLs, space-separated (secrets: never logged)",
    "FRAMEWATCH_ALERT_SLACK": "framewatch alert: Slack incoming-webhook URLs, space-separated (secrets)",
    "FRAMEWATCH_REDIS_PREFIX": "Redis key prefix (default framewatch)",
    "FRAMEWATCH_METRICS_HOST": "address /metrics, /healthz, /readyz listen on (default 0.0.0.0: every interface)",
}
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class ConfigError(FramewatchError):
    """The config file or a setting is unusable."""


def read_config_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The file's settings as environment-variable names -> string values.

    :raises ConfigError: the file is missing, not TOML, or holds a key framewatch does not know.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"config file {p} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p} is not valid TOML: {e}") from e
    out = {}
    for key, value in data.items():
        name = key if key.startswith(PREFIX) else PREFIX + key.upper()
        if name not in ENV_VARS:
            known = ", ".join(k[len(PREFIX) :].lower() for k in ENV_VARS)
            raise ConfigError(f"config file {p}: unknown key {key!r} (known: {known})")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config file {p}: {key} must be a string or a number")
        out[name] = str(value)
    return out


def effective_environment(config: Optional[str], env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment with the config file's settings beneath it (the environment wins).

    ``config`` is the ``--config`` flag; without it ``FRAMEWATCH_CONFIG`` names the file, if set.
    """
    path = config or env.get(CONFIG_VAR)
    merged = read_config_file(path) if path else {}
    merged.update({k: v for k, v in env.items() if k.startswith(PREFIX)})
    return merged


def kafka_settings(bootstrap: Optional[str], env: Mapping[str, str] = os.environ) -> Optional[KafkaSettings]:
    """:raises ConfigError: an unknown security protocol or SASL mechanism, or SASL without a user."""
    address = bootstrap or env.get("FRAMEWATCH_KAFKA")
    if not address:
        return None
    protocol = env.get("FRAMEWATCH_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(
            f"FRAMEWATCH_KAFKA_SECURITY_PROTOCOL={protocol!r}: use one of {', '.join(SECURITY_PROTOCOLS)}"
        )
    mechanism = (env.get("FRAMEWATCH_KAFKA_SASL_MECHANISM") or "").upper() or None
    if mechanism is not None and mechanism not in SASL_MECHANISMS:
        raise ConfigError(
            f"FRAMEWATCH_KAFKA_SASL_MECHANISM={mechanism!r}: use one of {', '.join(SASL_MECHANISMS)}"
        )
    if protocol.startswith("SASL") and not (mechanism and env.get("FRAMEWATCH_KAFKA_SASL_USERNAME")):
        raise ConfigError(
            f"{protocol} needs FRAMEWATCH_KAFKA_SASL_MECHANISM and FRAMEWATCH_KAFKA_SASL_USERNAME"
        )
    return KafkaSettings(
        bootstrap=address,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=env.get("FRAMEWATCH_KAFKA_SASL_USERNAME") or None,
        sasl_password=env.get("FRAMEWATCH_KAFKA_SASL_PASSWORD") or None,
        ssl_cafile=env.get("FRAMEWATCH_KAFKA_SSL_CAFILE") or None,
    )


def kafka_client(flag: Optional[str], env: Mapping[str, str] = os.environ) -> str:
    """The worker's Kafka client (consumer and outputs): ``--kafka-client``, else FRAMEWATCH_KAFKA_CLIENT,
    else kafka-python.

    :raises ConfigError: a client framewatch does not know.
    """
    name = (flag or env.get("FRAMEWATCH_KAFKA_CLIENT") or KAFKA_CLIENTS[0]).strip().lower()
    if name not in KAFKA_CLIENTS:
        raise ConfigError(f"Kafka client {name!r}: use one of {', '.join(KAFKA_CLIENTS)}")
    return name


# Every interface: Prometheus in Kubernetes scrapes the pod's IP, and a probe's kubelet does too; the endpoints
# hold no secrets (docs/security.md). A host install that wants loopback says --metrics-host 127.0.0.1.
DEFAULT_METRICS_HOST = "0.0.0.0"


def metrics_host(flag: Optional[str], env: Mapping[str, str] = os.environ) -> str:
    """Where a command's /metrics listens: ``--metrics-host``, else FRAMEWATCH_METRICS_HOST, else 0.0.0.0.

    :raises ConfigError: an empty address, or one with a port or spaces in it.
    """
    host = (flag if flag is not None else env.get("FRAMEWATCH_METRICS_HOST", DEFAULT_METRICS_HOST)).strip()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare or any(c.isspace() for c in bare) or (":" in bare and bare.count(":") < 2):
        raise ConfigError(f"metrics host {host!r}: give an address or host name without a port, e.g. 127.0.0.1, "
                          "0.0.0.0, :: (the port is --metrics-port)")  # fmt: skip
    return bare


def redis_settings(url: Optional[str], env: Mapping[str, str] = os.environ) -> Optional[RedisSettings]:
    address = url or env.get("FRAMEWATCH_REDIS")
    if not address:
        return None
    return RedisSettings(
        url=address,
        key_prefix=env.get("FRAMEWATCH_REDIS_PREFIX", "framewatch"),
        ssl_ca_certs=env.get("FRAMEWATCH_REDIS_CA") or None,
    )


def topics(env: Mapping[str, str] = os.environ) -> Topics:
    default = Topics()
    return Topics(
        frames=env.get("FRAMEWATCH_TOPIC_FRAMES", default.frames),
        scores=env.get("FRAMEWATCH_TOPIC_SCORES", default.scores),
        dead_letters=env.get("FRAMEWATCH_TOPIC_DLQ", default.dead_letters),
    )


def alert_topics(env: Mapping[str, str] = os.environ) -> AlertTopics:
    default = AlertTopics()
    return AlertTopics(
        dead_letters=env.get("FRAMEWATCH_TOPIC_ALERTS_DLQ", default.dead_letters),
        incidents=env.get("FRAMEWATCH_TOPIC_INCIDENTS", default.incidents),
    )


def alert_urls(env: Mapping[str, str] = os.environ) -> tuple[list[str], list[str]]:
    """(webhook URLs, Slack URLs) from FRAMEWATCH_ALERT_WEBHOOKS and FRAMEWATCH_ALERT_SLACK: secrets kept out
    of the command line, where ``ps`` shows them to every local user."""
    return env.get("FRAMEWATCH_ALERT_WEBHOOKS", "").split(), env.get("FRAMEWATCH_ALERT_SLACK", "").split()
