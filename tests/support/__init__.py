"""Test support: loopback servers (S3, MLflow, a KFP API stand-in), Kubernetes tools, the CLI runner."""
