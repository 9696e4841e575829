"""Robustness to missing and noisy inputs: the field's protocols (random feature missing, modality missing,
noise), their scores, and the masks that training with `train.missing_rate` shares with them."""
