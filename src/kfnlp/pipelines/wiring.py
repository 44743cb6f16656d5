"""Wiring that pipelines share: the adapt-then-TASK body and the register/promote ending."""

from dataclasses import dataclass

from kfp import dsl

from kfnlp.components.compare.component import compare
from kfnlp.components.evaluate.component import evaluate
from kfnlp.components.mask_eval.component import mask_eval
from kfnlp.components.preprocess.component import preprocess
from kfnlp.components.promote.component import promote
from kfnlp.components.register.component import register
from kfnlp.components.train_mlm.component import train_mlm


def register_and_promote(register_config, promote_config, model, evaluation, baseline=None):
    """register the model with its evaluation (and the baseline's, if any), then run the
    promotion gate on the new version with the same registry config."""
    inputs = {"model": model, "evaluation": evaluation}
    if baseline is not None:
        inputs["baseline"] = baseline
    registered = register(
        config=register_config, run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, **inputs
    ).set_display_name("register")
    promote(
        config=promote_config, register_config=register_config, registered=registered.outputs["registered"]
    ).set_display_name("promote")


@dataclass(frozen=True)
class DownstreamTask:
    """A labelled task that adapt-then-TASK fine-tunes from the base and the adapted encoder."""

    name: str  # "ner", "cls": in the display names (train-ner-base) and evaluation labels (ner-base)
    train: object  # its train component (config, dataset, base_model_ref | base_model) -> model
    evaluate: object  # its evaluate component (config, label, dataset, model) -> results


def adapt_then_task(task: DownstreamTask, model, labelled, configs: dict) -> None:
    """The body of adapt-then-ner and adapt-then-cls, after the labelled data (``labelled``, a
    dataset output whose training text the masked-LM may adapt on):

    preprocess -> mask-eval -> evaluate(base MLM); train-mlm -> evaluate(adapted MLM);
    train-TASK from the base and from the adapted encoder (same data and seed) -> evaluate-TASK
    both -> compare -> register (the adapted-encoder model, the base's evaluation as baseline)
    -> promote. ``configs`` maps each stage section (and train_task/evaluate_task) to its
    pipeline parameter."""
    corpus = preprocess(config=configs["preprocess"], tokenizer=model, corpus=labelled).set_display_name("preprocess")
    masked = mask_eval(config=configs["mask_eval"], dataset=corpus.outputs["dataset"]).set_display_name("mask-eval")
    mlm_base = evaluate(
        config=configs["evaluate"], label="base", eval_set=masked.outputs["eval_set"], model_ref=model
    ).set_display_name("evaluate-base")
    adapted = train_mlm(
        config=configs["train_mlm"],
        base_model=model,
        dataset=corpus.outputs["dataset"],
        eval_set=masked.outputs["eval_set"],
    ).set_display_name("train-mlm")
    mlm_adapted = evaluate(
        config=configs["evaluate"], label="adapted", eval_set=masked.outputs["eval_set"], model=adapted.outputs["model"]
    ).set_display_name("evaluate-adapted")
    task_base = task.train(config=configs["train_task"], dataset=labelled, base_model_ref=model).set_display_name(
        f"train-{task.name}-base"
    )
    task_adapted = task.train(
        config=configs["train_task"], dataset=labelled, base_model=adapted.outputs["model"]
    ).set_display_name(f"train-{task.name}-adapted")
    scored = {}
    for side, trained in (("base", task_base), ("adapted", task_adapted)):
        scored[side] = task.evaluate(
            config=configs["evaluate_task"],
            label=f"{task.name}-{side}",
            dataset=labelled,
            model=trained.outputs["model"],
        ).set_display_name(f"evaluate-{task.name}-{side}")
    compare(
        config=configs["compare"],
        mlm_base=mlm_base.outputs["results"],
        mlm_adapted=mlm_adapted.outputs["results"],
        task_base=scored["base"].outputs["results"],
        task_adapted=scored["adapted"].outputs["results"],
    ).set_display_name("compare")
    register_and_promote(
        configs["register"],
        configs["promote"],
        task_adapted.outputs["model"],
        scored["adapted"].outputs["results"],
        scored["base"].outputs["results"],
    )
