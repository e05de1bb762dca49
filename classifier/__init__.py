"""The model pipeline: load a TorchScript classifier, decode uploads, predict, encode.

Nothing in this package imports Flask, so every step can be used and tested on its own.
"""
