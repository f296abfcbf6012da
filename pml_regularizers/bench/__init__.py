"""Benchmark runner: PML's benchmarking protocol on PML 2.x."""
