"""orch: run CLI agents as a DAG described in a YAML plan."""

__version__ = "0.1.0"
__all__ = ["__version__"]
