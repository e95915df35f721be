"""Everything about the "normal" model: the embedder, fitting, the kNN index, the Redis store.

Takes images or arrays in and gives arrays out; Redis is confined to
``repository.py`` (key names in ``keys.py``).
"""
