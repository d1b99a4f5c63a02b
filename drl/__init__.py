"""drl: classical deep-RL agents for control and robotics, on torch-batched environments."""

__version__ = "0.1.0"
