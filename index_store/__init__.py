"""Everything about the "normal" model: the backbone registry, the embedder (global or patch
features), MSC fine-tuning (finetune.py; adapted weights: adapted.py), fitting, the kNN
index (faiss; on a CUDA device: device_knn.py), anomaly maps, the Redis store.

Takes images or arrays in and gives arrays out; Redis is confined to
``repository.py`` (key names in ``keys.py``). Offline evaluation lives in the
``evaluation`` package, which the worker never imports.
"""
