"""The benchmarks: each module is a program (python -m benchmarks.NAME) that writes its own tables."""
