"""The framewatch command line and the embedded local services it can start.

Sits on top of wire, producer, index_store and worker; no part imports it.
"""
