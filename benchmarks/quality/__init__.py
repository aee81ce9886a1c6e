"""Quality benchmarks: how well each method segments."""
