"""pymon: a drop-in replacement for conmon, the per-container monitor of podman and CRI-O.

Kept empty on purpose: this package is imported on the start-up path, where every
millisecond of import time delays the container's pid reaching the engine.
"""
