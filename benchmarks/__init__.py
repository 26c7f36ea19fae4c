"""Benchmarks: selligent-segment against segment-analytics-python, side by side.

Run ``python -m benchmarks.run`` (or ``python benchmarks/run.py``) from the repository root.
"""
