"""embedpipe: fine-tune, evaluate and index open embedding models with Kubeflow Pipelines.

The package is the thick library; the KFP components in `embedpipe.components` are thin wrappers
that import from it and call one function.
"""

__version__ = "0.1.0"
