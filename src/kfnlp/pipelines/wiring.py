"""Wiring that pipelines share: the swept or plain train step, the adapt-then-TASK body and the
register/promote ending."""

import contextlib
import inspect
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from kfp import dsl

from kfnlp.catalog import PIPELINES, parameter_help
from kfnlp.components.compare.component import compare
from kfnlp.components.deploy.component import deploy
from kfnlp.components.evaluate.component import evaluate
from kfnlp.components.mask_eval.component import mask_eval
from kfnlp.components.preprocess.component import preprocess
from kfnlp.components.promote.component import promote
from kfnlp.components.publish.component import publish
from kfnlp.components.register.component import register
from kfnlp.components.select_best.component import select_best
from kfnlp.components.train_mlm.component import train_mlm
from kfnlp.sweep import TRIAL_ENV, SweepPlan

# the sweep a pipeline function is being traced for (kfnlp.launch.pipelines traces it again inside
# tracing(plan, ...)); None: the plain pipeline, as the modules define it
_PLAN: ContextVar[SweepPlan | None] = ContextVar("kfnlp_sweep_plan", default=None)
# the deploy and publish sections (JSON) a pipeline function is traced with (enabled); None: no such task
_DEPLOY: ContextVar[str | None] = ContextVar("kfnlp_deploy", default=None)
_PUBLISH: ContextVar[str | None] = ContextVar("kfnlp_publish", default=None)


def documented(name: str) -> Callable:
    """Give a pipeline function (of catalog entry ``name``) an Args section made from the config's own help,
    under ``@dsl.pipeline``: KFP compiles it into each parameter's description, which the KFP UI's run form
    shows beside the field."""

    def document(func):
        entry = PIPELINES[name]
        args = [f"    {p}: {parameter_help(entry, p)}" for p in inspect.signature(func).parameters]
        func.__doc__ = f"{inspect.getdoc(func) or ''}\n\nArgs:\n" + "\n".join(args)
        return func

    return document


@contextlib.contextmanager
def tracing(plan: SweepPlan | None, deploy_config: str | None, publish_config: str | None) -> Iterator[None]:
    """Trace pipeline functions with ``plan``'s sweep in place of its train stage, and after promote a deploy task
    (``deploy_config``: the deploy section as JSON) and a publish task (``publish_config``)."""
    tokens = (_PLAN.set(plan), _DEPLOY.set(deploy_config), _PUBLISH.set(publish_config))
    try:
        yield
    finally:
        _PLAN.reset(tokens[0])
        _DEPLOY.reset(tokens[1])
        _PUBLISH.reset(tokens[2])


def trained(section: str, train, config, inputs: dict, score, score_inputs: dict):
    """The model output of the train stage ``section`` (``train_ner``): one ``train`` task; or, when
    the pipeline is traced for a sweep of that stage, one train task and one ``score`` task (the
    evaluate component, on the sweep's selection split or fixed eval set) per trial, at most
    ``parallelism`` at a time, and select-best's pick of the trials. Trial tasks carry
    ``$KFNLP_SWEEP_TRIAL``: a failing trial records its failure instead of failing the run."""
    name = section.replace("_", "-")
    plan = _PLAN.get()
    if plan is None or plan.target.train != section:
        return train(config=config, **inputs).set_display_name(name).outputs["model"]
    with dsl.ParallelFor(items=plan.items(), parallelism=plan.parallelism) as trial:
        candidate = train(config=config, trial=trial, **inputs).set_display_name(f"{name}-trial")
        candidate.set_env_variable(TRIAL_ENV, "1")
        scored = score(
            config=plan.evaluate_json, label="trial", model=candidate.outputs["model"], **score_inputs
        ).set_display_name(f"{plan.target.evaluate.replace('_', '-')}-trial")
        scored.set_env_variable(TRIAL_ENV, "1")
    picked = select_best(
        selection=plan.selection(),
        models=dsl.Collected(candidate.outputs["model"]),
        evaluations=dsl.Collected(scored.outputs["results"]),
    ).set_display_name("select-best")
    return picked.outputs["model"]


def register_and_promote(register_config, promote_config, model, evaluation, baseline=None, *, model_name, margin):
    """register the model with its evaluation (and the baseline's, if any) under ``model_name``, then run the
    promotion gate (with ``margin``) on the new version with the same registry config; traced for a deploy or a
    publish, then deploy or publish what the gate promoted."""
    inputs = {"model": model, "evaluation": evaluation}
    if baseline is not None:
        inputs["baseline"] = baseline
    registered = register(
        config=register_config, run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, model_name=model_name, **inputs
    ).set_display_name("register")
    gate = promote(
        config=promote_config,
        register_config=register_config,
        registered=registered.outputs["registered"],
        margin=margin,
    ).set_display_name("promote")
    deploy_config = _DEPLOY.get()
    if deploy_config is not None:
        deploy(
            config=deploy_config,
            register_config=register_config,
            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            registered=registered.outputs["registered"],
            decision=gate.outputs["decision"],
        ).set_display_name("deploy")
    publish_config = _PUBLISH.get()
    if publish_config is not None:
        publish(
            config=publish_config,
            register_config=register_config,
            registered=registered.outputs["registered"],
            decision=gate.outputs["decision"],
        ).set_display_name("publish")


@dataclass(frozen=True)
class DownstreamTask:
    """A labelled task that adapt-then-TASK fine-tunes from the base and the adapted encoder."""

    name: str  # "ner", "cls": in the display names (train-ner-base) and evaluation labels (ner-base)
    train: object  # its train component (config, dataset, base_model_ref | base_model) -> model
    evaluate: object  # its evaluate component (config, label, dataset, model) -> results


def adapt_then_task(task: DownstreamTask, model, labelled, configs: dict, knobs: dict) -> None:
    """The body of adapt-then-ner and adapt-then-cls, after the labelled data (``labelled``, a
    dataset output whose training text the masked-LM may adapt on):

    preprocess -> mask-eval -> evaluate(base MLM); train-mlm -> evaluate(adapted MLM);
    train-TASK from the base and from the adapted encoder (same data and seed) -> evaluate-TASK
    both -> compare -> register (the adapted-encoder model, the base's evaluation as baseline)
    -> promote. ``configs`` maps each stage section (and train_task/evaluate_task) to its
    pipeline parameter; ``knobs`` maps a section to its typed inputs ({"learning_rate": parameter})."""
    corpus = preprocess(config=configs["preprocess"], tokenizer=model, corpus=labelled).set_display_name("preprocess")
    masked = mask_eval(
        config=configs["mask_eval"], dataset=corpus.outputs["dataset"], **knobs["mask_eval"]
    ).set_display_name("mask-eval")
    mlm_base = evaluate(
        config=configs["evaluate"], label="base", eval_set=masked.outputs["eval_set"], model_ref=model
    ).set_display_name("evaluate-base")
    adapted = trained(
        "train_mlm",
        train_mlm,
        configs["train_mlm"],
        {
            "base_model": model,
            "dataset": corpus.outputs["dataset"],
            "eval_set": masked.outputs["eval_set"],
            **knobs["train_mlm"],
        },
        evaluate,
        {"eval_set": masked.outputs["eval_set"]},
    )
    mlm_adapted = evaluate(
        config=configs["evaluate"], label="adapted", eval_set=masked.outputs["eval_set"], model=adapted
    ).set_display_name("evaluate-adapted")
    task_base = task.train(
        config=configs["train_task"], dataset=labelled, base_model_ref=model, **knobs["train_task"]
    ).set_display_name(f"train-{task.name}-base")
    task_adapted = task.train(
        config=configs["train_task"], dataset=labelled, base_model=adapted, **knobs["train_task"]
    ).set_display_name(f"train-{task.name}-adapted")
    scored = {}
    for side, fine_tuned in (("base", task_base), ("adapted", task_adapted)):
        scored[side] = task.evaluate(
            config=configs["evaluate_task"],
            label=f"{task.name}-{side}",
            dataset=labelled,
            model=fine_tuned.outputs["model"],
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
        **knobs["gate"],
    )
