"""mlm-adapt: domain-adapt a masked-LM and show the perplexity before and after.

preprocess -> mask-eval -> evaluate(base) ─┐
                      └─> train-mlm -> evaluate(adapted) -> register
"""

from kfp import dsl

from kfnlp.components.evaluate.component import evaluate
from kfnlp.components.mask_eval.component import mask_eval
from kfnlp.components.preprocess.component import preprocess
from kfnlp.components.train_mlm.component import train_mlm
from kfnlp.pipelines.wiring import register_and_promote, trained


@dsl.pipeline(name="mlm-adapt", description="Masked-LM domain adaptation with a stable perplexity before/after.")
def mlm_adapt(
    model: str = "builtin:splade-tiny",
    preprocess_config: str = "{}",
    mask_eval_config: str = "{}",
    train_mlm_config: str = "{}",
    evaluate_config: str = "{}",
    register_config: str = "{}",
    promote_config: str = "{}",
):
    """Stage configs are JSON objects (see docs/configuration.md); ``{}`` means the
    stage's code defaults (the recipe's). ``kfnlp run`` fills them from the embedded
    defaults, a YAML config and --set overrides."""
    data = preprocess(config=preprocess_config, tokenizer=model).set_display_name("preprocess")
    masked = mask_eval(config=mask_eval_config, dataset=data.outputs["dataset"]).set_display_name("mask-eval")
    base = evaluate(
        config=evaluate_config, label="base", eval_set=masked.outputs["eval_set"], model_ref=model
    ).set_display_name("evaluate-base")
    adapted_model = trained(
        "train_mlm",
        train_mlm,
        train_mlm_config,
        {"base_model": model, "dataset": data.outputs["dataset"], "eval_set": masked.outputs["eval_set"]},
        evaluate,
        {"eval_set": masked.outputs["eval_set"]},
    )
    adapted = evaluate(
        config=evaluate_config, label="adapted", eval_set=masked.outputs["eval_set"], model=adapted_model
    ).set_display_name("evaluate-adapted")
    register_and_promote(
        register_config, promote_config, adapted_model, adapted.outputs["results"], base.outputs["results"]
    )
