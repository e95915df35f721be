"""The review web app: recent anomalies per source, the frame itself, "normal" / "confirmed" answers.

frames.py fetches frames and score records from Kafka, feed.py keeps the recent
anomalies, answers.py stores answers in Redis, marking.py turns a "normal" into
a new index version, pages.py renders HTML (pure), server.py is the HTTP edge.
"""
