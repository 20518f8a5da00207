"""Manifests, feature files, dataset/collate/sampler and the built-in demo data."""
