"""The alert consumer: score records in (its own consumer group), people told once (webhook, Slack, stdout).

noise.py decides (de-dup, N-of-M, cooldown; pure), sinks.py formats and sends,
delivery.py retries with backoff and counts, consumer.py is the Kafka edge.
"""
