"""lal-twisted: a live-streaming media server on Twisted."""

__version__ = "0.1.0"
