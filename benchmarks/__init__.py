"""Benchmarks for edgekube: `make bench` runs `benchmarks/run_all.py`."""
