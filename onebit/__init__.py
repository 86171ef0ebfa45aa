"""onebit: train 1-bit networks, export them to FINN, build and validate streaming accelerators."""
