"""The local operations engines the CLI calls: replay, LocalServing, the benchmarks' measuring, the demo's steps."""
