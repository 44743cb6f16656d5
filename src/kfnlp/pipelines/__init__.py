"""The @dsl.pipeline functions (wiring only); their catalog is kfnlp.catalog."""
