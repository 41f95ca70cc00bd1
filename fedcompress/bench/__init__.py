"""Benchmarks callable from the CLI (``fedcompress bench ...``): measurements, not tests."""
