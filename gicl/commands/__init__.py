"""One module per CLI subcommand; each defines `register(subparsers)`.

Arguments shared with the benchmarks live in gicl.arguments (below both layers)."""
