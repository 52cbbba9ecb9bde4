"""The package version, in the one place that setup.cfg, the package root and the ONNX cache key read it from."""

__version__ = "0.2.0"
