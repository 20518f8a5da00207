"""Batched generation and metrics, shared by training-time validation and the validate script."""
