"""The alert consumer: score records in (its own consumer group), people told once (webhook, Slack, stdout).

noise.py decides (de-dup, N-of-M, cooldown; pure), sinks.py formats and sends
(endpoints.py keeps webhook URLs secret), delivery.py gives each sink its own
lane with retries and dead letters, offsets.py says what may be committed,
kafka_io.py and consumer.py are the Kafka edge and the loop.
"""
