"""Configuration: Hydra composition, sweeps, and conversion to node types."""
