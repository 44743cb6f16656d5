"""clm-adapt: domain-adapt a causal LM and show the perplexity before and after.

preprocess -> evaluate-clm(base) ─────────────────────┐
      └─> train-clm -> evaluate-clm(adapted) -> register -> promote
"""

from kfp import dsl

from kfnlp.components.evaluate_clm.component import evaluate_clm
from kfnlp.components.preprocess.component import preprocess
from kfnlp.components.train_clm.component import train_clm
from kfnlp.pipelines.wiring import register_and_promote, trained


@dsl.pipeline(name="clm-adapt", description="Causal-LM domain adaptation with a deterministic perplexity before/after.")
def clm_adapt(
    model: str = "builtin:gpt2-imdb",
    preprocess_config: str = "{}",
    train_clm_config: str = "{}",
    evaluate_clm_config: str = "{}",
    register_config: str = "{}",
    promote_config: str = "{}",
):
    """Stage configs are JSON objects (see docs/configuration.md); ``{}`` means the
    stage's code defaults. No mask-eval: causal perplexity masks nothing, so both
    evaluations score the same first chunks of the dataset's test split."""
    data = preprocess(config=preprocess_config, tokenizer=model).set_display_name("preprocess")
    base = evaluate_clm(
        config=evaluate_clm_config, label="base", dataset=data.outputs["dataset"], model_ref=model
    ).set_display_name("evaluate-clm-base")
    adapted_model = trained(
        "train_clm",
        train_clm,
        train_clm_config,
        {"base_model": model, "dataset": data.outputs["dataset"]},
        evaluate_clm,
        {"dataset": data.outputs["dataset"]},
    )
    adapted = evaluate_clm(
        config=evaluate_clm_config, label="adapted", dataset=data.outputs["dataset"], model=adapted_model
    ).set_display_name("evaluate-clm-adapted")
    register_and_promote(
        register_config, promote_config, adapted_model, adapted.outputs["results"], base.outputs["results"]
    )
