"""Benchmarks: dataset loaders, evaluation protocols, the run store, running and reporting."""
