"""Development helpers shared by the demo, the tests and the benchmarks (not shipped)."""
