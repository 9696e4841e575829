"""ray_msa: train, tune and compare multimodal sentiment analysis models on Ray."""

__version__ = "0.1.0"
