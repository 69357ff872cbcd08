"""Benchmark scoring for the evaluation module: answers to metrics, reports, SAM2 masks."""
