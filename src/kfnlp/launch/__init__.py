"""Ways to run pipelines and stages: locally (kfp.local), in containers, inside a pod, on a cluster."""
