"""Neural networks: coordinate grids and the INR architectures the methods fit."""
