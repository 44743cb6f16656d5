"""adapt-then-cls: does masked-LM domain adaptation help the downstream classifier?

preprocess-cls ─> preprocess (its training text, or another corpus) -> mask-eval
  mask-eval -> evaluate(base MLM)
  mask-eval -> train-mlm -> evaluate(adapted MLM)
  train-cls(base encoder) -> evaluate-cls(base)        ┐ same data, seed and test split
  train-cls(adapted encoder) -> evaluate-cls(adapted)  ┘
  -> compare (report) -> register (the adapted-encoder classifier)
"""

from kfp import dsl

from kfnlp.components.compare.component import compare
from kfnlp.components.evaluate.component import evaluate
from kfnlp.components.evaluate_cls.component import evaluate_cls
from kfnlp.components.mask_eval.component import mask_eval
from kfnlp.components.preprocess.component import preprocess
from kfnlp.components.preprocess_cls.component import preprocess_cls
from kfnlp.components.train_cls.component import train_cls
from kfnlp.components.train_mlm.component import train_mlm
from kfnlp.pipelines.wiring import register_and_promote


@dsl.pipeline(
    name="adapt-then-cls",
    description="Domain-adapt a masked-LM, fine-tune a classifier from the base and the adapted encoder, compare.",
)
def adapt_then_cls(
    model: str = "builtin:splade-tiny",
    preprocess_cls_config: str = "{}",
    preprocess_config: str = "{}",
    mask_eval_config: str = "{}",
    train_mlm_config: str = "{}",
    evaluate_config: str = "{}",
    train_cls_config: str = "{}",
    evaluate_cls_config: str = "{}",
    compare_config: str = "{}",
    register_config: str = "{}",
    promote_config: str = "{}",
):
    """Stage configs are JSON objects (see docs/configuration.md); ``{}`` means the
    stage's code defaults. The embedded defaults (``kfnlp run``, ``kfnlp compile``) set
    ``preprocess.source: cls:train``: adapt on the classifier's training texts (task-adaptive
    pretraining)."""
    cls_data = preprocess_cls(config=preprocess_cls_config, tokenizer=model).set_display_name("preprocess-cls")
    corpus = preprocess(config=preprocess_config, tokenizer=model, corpus=cls_data.outputs["dataset"]).set_display_name(
        "preprocess"
    )
    masked = mask_eval(config=mask_eval_config, dataset=corpus.outputs["dataset"]).set_display_name("mask-eval")
    mlm_base = evaluate(
        config=evaluate_config, label="base", eval_set=masked.outputs["eval_set"], model_ref=model
    ).set_display_name("evaluate-base")
    adapted = train_mlm(
        config=train_mlm_config,
        base_model=model,
        dataset=corpus.outputs["dataset"],
        eval_set=masked.outputs["eval_set"],
    ).set_display_name("train-mlm")
    mlm_adapted = evaluate(
        config=evaluate_config, label="adapted", eval_set=masked.outputs["eval_set"], model=adapted.outputs["model"]
    ).set_display_name("evaluate-adapted")
    cls_base = train_cls(
        config=train_cls_config, dataset=cls_data.outputs["dataset"], base_model_ref=model
    ).set_display_name("train-cls-base")
    cls_adapted = train_cls(
        config=train_cls_config, dataset=cls_data.outputs["dataset"], base_model=adapted.outputs["model"]
    ).set_display_name("train-cls-adapted")
    scored_base = evaluate_cls(
        config=evaluate_cls_config,
        label="cls-base",
        dataset=cls_data.outputs["dataset"],
        model=cls_base.outputs["model"],
    ).set_display_name("evaluate-cls-base")
    scored_adapted = evaluate_cls(
        config=evaluate_cls_config,
        label="cls-adapted",
        dataset=cls_data.outputs["dataset"],
        model=cls_adapted.outputs["model"],
    ).set_display_name("evaluate-cls-adapted")
    compare(
        config=compare_config,
        mlm_base=mlm_base.outputs["results"],
        mlm_adapted=mlm_adapted.outputs["results"],
        task_base=scored_base.outputs["results"],
        task_adapted=scored_adapted.outputs["results"],
    ).set_display_name("compare")
    register_and_promote(
        register_config,
        promote_config,
        cls_adapted.outputs["model"],
        scored_adapted.outputs["results"],
        scored_base.outputs["results"],
    )
