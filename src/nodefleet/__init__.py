"""nodefleet: native multi-architecture container builds on a fleet of real hosts."""

__version__ = "0.1.0"
