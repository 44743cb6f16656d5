"""adapt-then-cls: does masked-LM domain adaptation help the downstream classifier?

preprocess-cls ─> preprocess (its training text, or another corpus) -> mask-eval
  mask-eval -> evaluate(base MLM)
  mask-eval -> train-mlm -> evaluate(adapted MLM)
  train-cls(base encoder) -> evaluate-cls(base)        ┐ same data, seed and test split
  train-cls(adapted encoder) -> evaluate-cls(adapted)  ┘
  -> compare (report) -> register (the adapted-encoder classifier)
"""

from kfp import dsl

from kfnlp.components.evaluate_cls.component import evaluate_cls
from kfnlp.components.preprocess_cls.component import preprocess_cls
from kfnlp.components.train_cls.component import train_cls
from kfnlp.pipelines.wiring import DownstreamTask, adapt_then_task, documented


@dsl.pipeline(
    name="adapt-then-cls",
    description="Domain-adapt a masked-LM, fine-tune a classifier from the base and the adapted encoder, compare.",
)
@documented("adapt-then-cls")
def adapt_then_cls(
    model: str = "builtin:splade-tiny",
    preprocess_cls_source: str = "builtin:imdb",
    mask_eval_strategy: str = "token",
    train_mlm_learning_rate: float = 5e-4,
    train_mlm_num_epochs: float = 3.0,
    train_mlm_max_steps: int = 200,
    train_mlm_batch_size: int = 32,
    train_mlm_seed: int = 42,
    train_mlm_masking: str = "token",
    train_cls_learning_rate: float = 5e-4,
    train_cls_num_epochs: float = 3.0,
    train_cls_max_steps: int = -1,
    train_cls_batch_size: int = 32,
    train_cls_seed: int = 42,
    register_model_name: str = "kfnlp-cls-imdb-adapted",
    promote_margin: float = 0.0,
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
    """The typed parameters are the settings people change most (their defaults: the embedded defaults);
    every other setting is in the stage's JSON parameter. The embedded defaults (``kfnlp run``, ``kfnlp compile``) set
    ``preprocess.source: cls:train``: adapt on the classifier's training texts (task-adaptive
    pretraining)."""
    cls_data = preprocess_cls(
        config=preprocess_cls_config, tokenizer=model, source=preprocess_cls_source
    ).set_display_name("preprocess-cls")
    adapt_then_task(
        DownstreamTask("cls", train_cls, evaluate_cls),
        model,
        cls_data.outputs["dataset"],
        {
            "preprocess": preprocess_config,
            "mask_eval": mask_eval_config,
            "train_mlm": train_mlm_config,
            "evaluate": evaluate_config,
            "train_task": train_cls_config,
            "evaluate_task": evaluate_cls_config,
            "compare": compare_config,
            "register": register_config,
            "promote": promote_config,
        },
        {
            "mask_eval": {"strategy": mask_eval_strategy},
            "train_mlm": {
                "learning_rate": train_mlm_learning_rate,
                "num_epochs": train_mlm_num_epochs,
                "max_steps": train_mlm_max_steps,
                "batch_size": train_mlm_batch_size,
                "seed": train_mlm_seed,
                "masking": train_mlm_masking,
            },
            "train_task": {
                "learning_rate": train_cls_learning_rate,
                "num_epochs": train_cls_num_epochs,
                "max_steps": train_cls_max_steps,
                "batch_size": train_cls_batch_size,
                "seed": train_cls_seed,
            },
            "gate": {"model_name": register_model_name, "margin": promote_margin},
        },
    )
