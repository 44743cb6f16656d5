"""cls: fine-tune an encoder for text classification and register it.

preprocess-cls -> train-cls -> evaluate-cls -> register
"""

from kfp import dsl

from kfnlp.components.evaluate_cls.component import evaluate_cls
from kfnlp.components.preprocess_cls.component import preprocess_cls
from kfnlp.components.train_cls.component import train_cls
from kfnlp.pipelines.wiring import documented, register_and_promote, trained


@dsl.pipeline(name="cls", description="Text classification: fine-tune, score with scikit-learn, register.")
@documented("cls")
def cls(
    model: str = "builtin:splade-tiny",
    preprocess_cls_source: str = "builtin:imdb",
    train_cls_learning_rate: float = 5e-4,
    train_cls_num_epochs: float = 3.0,
    train_cls_max_steps: int = -1,
    train_cls_batch_size: int = 32,
    train_cls_seed: int = 42,
    register_model_name: str = "kfnlp-cls-imdb",
    promote_margin: float = 0.0,
    preprocess_cls_config: str = "{}",
    train_cls_config: str = "{}",
    evaluate_cls_config: str = "{}",
    register_config: str = "{}",
    promote_config: str = "{}",
):
    """The typed parameters are the settings people change most (their defaults: the embedded defaults);
    every other setting is in the stage's JSON parameter (docs/configuration.md)."""
    data = preprocess_cls(config=preprocess_cls_config, tokenizer=model, source=preprocess_cls_source).set_display_name(
        "preprocess-cls"
    )
    fine_tuned = trained(
        "train_cls",
        train_cls,
        train_cls_config,
        {
            "dataset": data.outputs["dataset"],
            "base_model_ref": model,
            "learning_rate": train_cls_learning_rate,
            "num_epochs": train_cls_num_epochs,
            "max_steps": train_cls_max_steps,
            "batch_size": train_cls_batch_size,
            "seed": train_cls_seed,
        },
        evaluate_cls,
        {"dataset": data.outputs["dataset"]},
    )
    scored = evaluate_cls(
        config=evaluate_cls_config, label="cls", dataset=data.outputs["dataset"], model=fine_tuned
    ).set_display_name("evaluate-cls")
    register_and_promote(
        register_config,
        promote_config,
        fine_tuned,
        scored.outputs["results"],
        model_name=register_model_name,
        margin=promote_margin,
    )
