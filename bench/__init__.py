"""onebit's benchmarks; each writes JSON + Markdown (and a PNG where it plots) under bench/results/."""
