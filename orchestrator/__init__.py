"""orch: a hybrid local/Colab training orchestrator for TensorFlow.

Importing this package is cheap on purpose: it pulls in nothing beyond the
standard library, so the CLI, the worker (which also runs inside Colab) and job
scripts can all import it without paying for TensorFlow or Google clients.
"""

__version__ = "0.2.0"
