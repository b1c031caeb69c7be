"""l2sparse: learn how sparse a multi-task network should be."""

__version__ = "0.1.0"
