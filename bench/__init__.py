"""Benchmarks: `./run.sh bench` (python -m bench). See bench/__main__.py."""
