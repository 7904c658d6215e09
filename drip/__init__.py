"""drip: marketing automation with campaigns as YAML and journeys on Temporal."""

__all__ = ["__version__"]
__version__ = "0.1.0"
