"""ner: fine-tune an encoder for named-entity recognition and register it.

preprocess-ner -> train-ner -> evaluate-ner -> register
"""

from kfp import dsl

from kfnlp.components.evaluate_ner.component import evaluate_ner
from kfnlp.components.preprocess_ner.component import preprocess_ner
from kfnlp.components.train_ner.component import train_ner
from kfnlp.pipelines.wiring import register_and_promote, trained


@dsl.pipeline(name="ner", description="Named-entity recognition: fine-tune, score with seqeval, register.")
def ner(
    model: str = "builtin:minilm",
    preprocess_ner_config: str = "{}",
    train_ner_config: str = "{}",
    evaluate_ner_config: str = "{}",
    register_config: str = "{}",
    promote_config: str = "{}",
):
    """Stage configs are JSON objects (see docs/configuration.md); ``{}`` means the
    stage's code defaults (the recipe's)."""
    data = preprocess_ner(config=preprocess_ner_config, tokenizer=model).set_display_name("preprocess-ner")
    fine_tuned = trained(
        "train_ner",
        train_ner,
        train_ner_config,
        {"dataset": data.outputs["dataset"], "base_model_ref": model},
        evaluate_ner,
        {"dataset": data.outputs["dataset"]},
    )
    scored = evaluate_ner(
        config=evaluate_ner_config, label="ner", dataset=data.outputs["dataset"], model=fine_tuned
    ).set_display_name("evaluate-ner")
    register_and_promote(register_config, promote_config, fine_tuned, scored.outputs["results"])
