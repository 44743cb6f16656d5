"""cls: fine-tune an encoder for text classification and register it.

preprocess-cls -> train-cls -> evaluate-cls -> register
"""

from kfp import dsl

from kfnlp.components.evaluate_cls.component import evaluate_cls
from kfnlp.components.preprocess_cls.component import preprocess_cls
from kfnlp.components.train_cls.component import train_cls
from kfnlp.pipelines.wiring import register_and_promote, trained


@dsl.pipeline(name="cls", description="Text classification: fine-tune, score with scikit-learn, register.")
def cls(
    model: str = "builtin:minilm",
    preprocess_cls_config: str = "{}",
    train_cls_config: str = "{}",
    evaluate_cls_config: str = "{}",
    register_config: str = "{}",
    promote_config: str = "{}",
):
    """Stage configs are JSON objects (see docs/configuration.md); ``{}`` means the
    stage's code defaults (the recipe's)."""
    data = preprocess_cls(config=preprocess_cls_config, tokenizer=model).set_display_name("preprocess-cls")
    fine_tuned = trained(
        "train_cls",
        train_cls,
        train_cls_config,
        {"dataset": data.outputs["dataset"], "base_model_ref": model},
        evaluate_cls,
        {"dataset": data.outputs["dataset"]},
    )
    scored = evaluate_cls(
        config=evaluate_cls_config, label="cls", dataset=data.outputs["dataset"], model=fine_tuned
    ).set_display_name("evaluate-cls")
    register_and_promote(register_config, promote_config, fine_tuned, scored.outputs["results"])
