"""MetaQAP no-reference image quality assessment for transformers."""
__version__ = "0.1.0"
