"""Pseudo-labels: box prompts from the specialist, refinement, and the per-round store."""
