"""opentracking benchmarks (`make bench`): each case measures the system against a baseline written in the
benchmark itself, side by side in the same run. See PERFORMANCE.md."""
