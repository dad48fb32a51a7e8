"""fsbridge: a self-hosted bridge between Fullstory and Twilio Segment."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fsbridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
