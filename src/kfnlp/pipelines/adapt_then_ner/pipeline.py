"""adapt-then-ner: does masked-LM domain adaptation help the downstream NER task?

preprocess-ner ─> preprocess (its training text, or another corpus) -> mask-eval
  mask-eval -> evaluate(base MLM)
  mask-eval -> train-mlm -> evaluate(adapted MLM)
  train-ner(base encoder) -> evaluate-ner(base)        ┐ same data, seed and test split
  train-ner(adapted encoder) -> evaluate-ner(adapted)  ┘
  -> compare (report) -> register (the adapted-encoder NER model)
"""

from kfp import dsl

from kfnlp.components.compare.component import compare
from kfnlp.components.evaluate.component import evaluate
from kfnlp.components.evaluate_ner.component import evaluate_ner
from kfnlp.components.mask_eval.component import mask_eval
from kfnlp.components.preprocess.component import preprocess
from kfnlp.components.preprocess_ner.component import preprocess_ner
from kfnlp.components.train_mlm.component import train_mlm
from kfnlp.components.train_ner.component import train_ner
from kfnlp.pipelines.wiring import register_and_promote


@dsl.pipeline(
    name="adapt-then-ner",
    description="Domain-adapt a masked-LM, fine-tune NER from the base and the adapted encoder, compare.",
)
def adapt_then_ner(
    model: str = "builtin:splade-tiny",
    preprocess_ner_config: str = "{}",
    preprocess_config: str = "{}",
    mask_eval_config: str = "{}",
    train_mlm_config: str = "{}",
    evaluate_config: str = "{}",
    train_ner_config: str = "{}",
    evaluate_ner_config: str = "{}",
    compare_config: str = "{}",
    register_config: str = "{}",
    promote_config: str = "{}",
):
    """Stage configs are JSON objects (see docs/configuration.md); ``{}`` means the
    stage's code defaults. The embedded defaults (``kfnlp run``, ``kfnlp compile``) set
    ``preprocess.source: ner:train``: adapt on the NER training sentences (task-adaptive
    pretraining)."""
    ner_data = preprocess_ner(config=preprocess_ner_config, tokenizer=model).set_display_name("preprocess-ner")
    corpus = preprocess(config=preprocess_config, tokenizer=model, corpus=ner_data.outputs["dataset"]).set_display_name(
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
    ner_base = train_ner(
        config=train_ner_config, dataset=ner_data.outputs["dataset"], base_model_ref=model
    ).set_display_name("train-ner-base")
    ner_adapted = train_ner(
        config=train_ner_config, dataset=ner_data.outputs["dataset"], base_model=adapted.outputs["model"]
    ).set_display_name("train-ner-adapted")
    scored_base = evaluate_ner(
        config=evaluate_ner_config,
        label="ner-base",
        dataset=ner_data.outputs["dataset"],
        model=ner_base.outputs["model"],
    ).set_display_name("evaluate-ner-base")
    scored_adapted = evaluate_ner(
        config=evaluate_ner_config,
        label="ner-adapted",
        dataset=ner_data.outputs["dataset"],
        model=ner_adapted.outputs["model"],
    ).set_display_name("evaluate-ner-adapted")
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
        ner_adapted.outputs["model"],
        scored_adapted.outputs["results"],
        scored_base.outputs["results"],
    )
