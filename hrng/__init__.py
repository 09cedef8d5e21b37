"""The hardware random number generator: sources, health tests and the mixer."""
