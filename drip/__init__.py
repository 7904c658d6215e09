"""drip: marketing automation with campaigns as YAML and journeys on Temporal."""

from drip.settings import __version__

__all__ = ["__version__"]
