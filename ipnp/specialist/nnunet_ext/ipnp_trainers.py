"""Lets nnU-Net's trainer search (``nnUNet_extTrainer``) find ipnp's trainers by class name."""

from ipnp.specialist.trainers import *  # noqa: F401,F403
from ipnp.baselines.dodnet import *  # noqa: F401,F403
