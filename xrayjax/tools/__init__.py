"""Command-line tools over the package: demo, report, ablation, benchmarks, layer profiler."""
