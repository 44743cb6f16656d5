"""ner: fine-tune an encoder for named-entity recognition and register it.

preprocess-ner -> train-ner -> evaluate-ner -> register
"""

from kfp import dsl

from kfnlp.components.evaluate_ner.component import evaluate_ner
from kfnlp.components.preprocess_ner.component import preprocess_ner
from kfnlp.components.train_ner.component import train_ner
from kfnlp.pipelines.wiring import documented, register_and_promote, trained


@dsl.pipeline(name="ner", description="Named-entity recognition: fine-tune, score with seqeval, register.")
@documented("ner")
def ner(
    model: str = "builtin:minilm",
    preprocess_ner_source: str = "builtin:wnut16",
    train_ner_learning_rate: float = 1e-4,
    train_ner_num_epochs: float = 3.0,
    train_ner_max_steps: int = -1,
    train_ner_batch_size: int = 8,
    train_ner_seed: int = 42,
    register_model_name: str = "kfnlp-ner-wnut16",
    promote_margin: float = 0.0,
    preprocess_ner_config: str = "{}",
    train_ner_config: str = "{}",
    evaluate_ner_config: str = "{}",
    register_config: str = "{}",
    promote_config: str = "{}",
):
    """The typed parameters are the settings people change most (their defaults: the embedded defaults);
    every other setting is in the stage's JSON parameter (docs/configuration.md)."""
    data = preprocess_ner(config=preprocess_ner_config, tokenizer=model, source=preprocess_ner_source).set_display_name(
        "preprocess-ner"
    )
    fine_tuned = trained(
        "train_ner",
        train_ner,
        train_ner_config,
        {
            "dataset": data.outputs["dataset"],
            "base_model_ref": model,
            "learning_rate": train_ner_learning_rate,
            "num_epochs": train_ner_num_epochs,
            "max_steps": train_ner_max_steps,
            "batch_size": train_ner_batch_size,
            "seed": train_ner_seed,
        },
        evaluate_ner,
        {"dataset": data.outputs["dataset"]},
    )
    scored = evaluate_ner(
        config=evaluate_ner_config, label="ner", dataset=data.outputs["dataset"], model=fine_tuned
    ).set_display_name("evaluate-ner")
    register_and_promote(
        register_config,
        promote_config,
        fine_tuned,
        scored.outputs["results"],
        model_name=register_model_name,
        margin=promote_margin,
    )
