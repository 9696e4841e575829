"""Pretrained encoders that ship in PyPI packages (nothing is downloaded at run time):
the language models and EfficientNet-Lite0. Data preparation (frozen features) and the
models (fine-tuned layers) both use them, so they sit below both."""
