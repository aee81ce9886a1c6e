"""Performance benchmarks: time and memory."""
