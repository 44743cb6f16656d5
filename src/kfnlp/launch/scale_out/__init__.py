"""A train stage across several nodes: the launcher pod hands the stage to the cluster's own distributed engine.

With ``cluster.train.nodes > 1`` the compiled train task carries a :class:`~kfnlp.launch.scale_out.spec.ScaleOut`
(``spec``) and runs as a small CPU launcher that creates a Kubeflow Trainer ``TrainJob`` or a Training Operator
``PyTorchJob`` (``manifests``), follows it to its end and exits with its outcome (``launcher``).
"""
