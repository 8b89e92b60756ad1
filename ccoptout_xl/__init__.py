"""ccoptout-xl: Constant Contact opt-outs, into Excel."""

__version__ = "0.1.0"
