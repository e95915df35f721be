"""Offline evaluation: datasets, the feature cache, the one-class and MVTec-style protocols.

Uses ``index_store`` (the embedder, fitting, the kNN index); the worker never imports this package.
"""
