"""The model registry (MLflow): versions, lineage tags, the promotion gate."""

from kfnlp.registry.store import Registry

__all__ = ["Registry"]
