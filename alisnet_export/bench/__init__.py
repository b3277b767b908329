"""Benchmarks (``make bench``): size, latency, memory and parity per format, each measured in a fresh worker
process (``python -m alisnet_export.bench.runner``); Table 1's int8 sizes (``runner``)."""
