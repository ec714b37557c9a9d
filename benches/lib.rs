//! Criterion benchmarks across the channel crates; see `benches/README.md` for the figures.
