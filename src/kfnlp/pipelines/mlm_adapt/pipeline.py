"""mlm-adapt: domain-adapt a masked-LM and show the perplexity before and after.

preprocess -> mask-eval -> evaluate(base) ─┐
                      └─> train-mlm -> evaluate(adapted) -> register
"""

from kfp import dsl

from kfnlp.components.evaluate.component import evaluate
from kfnlp.components.mask_eval.component import mask_eval
from kfnlp.components.preprocess.component import preprocess
from kfnlp.components.train_mlm.component import train_mlm
from kfnlp.pipelines.wiring import documented, register_and_promote, trained


@dsl.pipeline(name="mlm-adapt", description="Masked-LM domain adaptation with a stable perplexity before/after.")
@documented("mlm-adapt")
def mlm_adapt(
    model: str = "builtin:splade-tiny",
    preprocess_source: str = "builtin:imdb",
    mask_eval_strategy: str = "token",
    train_mlm_learning_rate: float = 5e-4,
    train_mlm_num_epochs: float = 3.0,
    train_mlm_max_steps: int = 300,
    train_mlm_batch_size: int = 32,
    train_mlm_seed: int = 42,
    train_mlm_masking: str = "token",
    register_model_name: str = "kfnlp-mlm-imdb",
    promote_margin: float = 0.0,
    preprocess_config: str = "{}",
    mask_eval_config: str = "{}",
    train_mlm_config: str = "{}",
    evaluate_config: str = "{}",
    register_config: str = "{}",
    promote_config: str = "{}",
):
    """The typed parameters are the settings people change most (their defaults: the embedded defaults);
    every other setting is in the stage's JSON parameter. ``kfnlp run`` and ``kfnlp compile`` fill both
    from the embedded defaults, a YAML config and --set overrides."""
    data = preprocess(config=preprocess_config, tokenizer=model, source=preprocess_source).set_display_name(
        "preprocess"
    )
    masked = mask_eval(
        config=mask_eval_config, dataset=data.outputs["dataset"], strategy=mask_eval_strategy
    ).set_display_name("mask-eval")
    base = evaluate(
        config=evaluate_config, label="base", eval_set=masked.outputs["eval_set"], model_ref=model
    ).set_display_name("evaluate-base")
    adapted_model = trained(
        "train_mlm",
        train_mlm,
        train_mlm_config,
        {
            "base_model": model,
            "dataset": data.outputs["dataset"],
            "eval_set": masked.outputs["eval_set"],
            "learning_rate": train_mlm_learning_rate,
            "num_epochs": train_mlm_num_epochs,
            "max_steps": train_mlm_max_steps,
            "batch_size": train_mlm_batch_size,
            "seed": train_mlm_seed,
            "masking": train_mlm_masking,
        },
        evaluate,
        {"eval_set": masked.outputs["eval_set"]},
    )
    adapted = evaluate(
        config=evaluate_config, label="adapted", eval_set=masked.outputs["eval_set"], model=adapted_model
    ).set_display_name("evaluate-adapted")
    register_and_promote(
        register_config,
        promote_config,
        adapted_model,
        adapted.outputs["results"],
        base.outputs["results"],
        model_name=register_model_name,
        margin=promote_margin,
    )
