"""Baselines from the literature, as nnU-Net trainers that share ipnp's planning, preprocessing and predictor."""
