"""The review web app: recent anomalies per source, the frame itself, "normal" / "confirmed" answers.

frames.py fetches frames (bytes only, typed by their magic number) and score
records from Kafka, feed.py keeps the recent anomalies (only those whose frames
are on the frames topic), answers.py stores answers in Redis, marking.py turns a
"normal" into a new index version (once per frame), pages.py renders HTML (pure),
app.py is what the page does; access.py (tokens, proxy user header, roles) and
sessions.py (cookie -> identity, CSRF token) say who asks; web.py is the HTTP
layer (werkzeug: checks Host, session, Origin, CSRF, role; sets the security
headers) and server.py serves it with waitress. docs/security.md has the model.
"""
