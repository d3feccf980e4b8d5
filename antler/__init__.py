"""antler-ray: a Ray-distributed re-implementation of antler, the network test tool."""

__version__ = "0.1.0"
