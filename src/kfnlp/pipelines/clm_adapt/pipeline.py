"""clm-adapt: domain-adapt a causal LM and show the perplexity before and after.

preprocess -> evaluate-clm(base) ─────────────────────┐
      └─> train-clm -> evaluate-clm(adapted) -> register -> promote
"""

from kfp import dsl

from kfnlp.components.evaluate_clm.component import evaluate_clm
from kfnlp.components.preprocess.component import preprocess
from kfnlp.components.train_clm.component import train_clm
from kfnlp.pipelines.wiring import documented, register_and_promote, trained


@dsl.pipeline(name="clm-adapt", description="Causal-LM domain adaptation with a deterministic perplexity before/after.")
@documented("clm-adapt")
def clm_adapt(
    model: str = "builtin:gpt2-imdb",
    preprocess_source: str = "builtin:rotten-tomatoes",
    train_clm_learning_rate: float = 1e-3,
    train_clm_num_epochs: float = 3.0,
    train_clm_max_steps: int = -1,
    train_clm_batch_size: int = 32,
    train_clm_seed: int = 42,
    register_model_name: str = "kfnlp-clm-rt",
    promote_margin: float = 0.0,
    preprocess_config: str = "{}",
    train_clm_config: str = "{}",
    evaluate_clm_config: str = "{}",
    register_config: str = "{}",
    promote_config: str = "{}",
):
    """The typed parameters are the settings people change most (their defaults: the embedded defaults);
    every other setting is in the stage's JSON parameter (docs/configuration.md). No mask-eval: causal perplexity masks nothing, so both
    evaluations score the same first chunks of the dataset's test split."""
    data = preprocess(config=preprocess_config, tokenizer=model, source=preprocess_source).set_display_name(
        "preprocess"
    )
    base = evaluate_clm(
        config=evaluate_clm_config, label="base", dataset=data.outputs["dataset"], model_ref=model
    ).set_display_name("evaluate-clm-base")
    adapted_model = trained(
        "train_clm",
        train_clm,
        train_clm_config,
        {
            "base_model": model,
            "dataset": data.outputs["dataset"],
            "learning_rate": train_clm_learning_rate,
            "num_epochs": train_clm_num_epochs,
            "max_steps": train_clm_max_steps,
            "batch_size": train_clm_batch_size,
            "seed": train_clm_seed,
        },
        evaluate_clm,
        {"dataset": data.outputs["dataset"]},
    )
    adapted = evaluate_clm(
        config=evaluate_clm_config, label="adapted", dataset=data.outputs["dataset"], model=adapted_model
    ).set_display_name("evaluate-clm-adapted")
    register_and_promote(
        register_config,
        promote_config,
        adapted_model,
        adapted.outputs["results"],
        base.outputs["results"],
        model_name=register_model_name,
        margin=promote_margin,
    )
