"""Kubeflow clusters: compile settings, compile, and the KFP API (upload, submit)."""
