"""alisnet-export: turn a trained ALiSNet checkpoint into mobile artifacts and prove they match.

The data flow is one way (see README.md, "Layout"):
checkpoint -> model -> (quantized model) -> artifact -> runner -> parity report -> bundle.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
