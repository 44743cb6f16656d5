"""adapt-then-ner: does masked-LM domain adaptation help the downstream NER task?

preprocess-ner ─> preprocess (its training text, or another corpus) -> mask-eval
  mask-eval -> evaluate(base MLM)
  mask-eval -> train-mlm -> evaluate(adapted MLM)
  train-ner(base encoder) -> evaluate-ner(base)        ┐ same data, seed and test split
  train-ner(adapted encoder) -> evaluate-ner(adapted)  ┘
  -> compare (report) -> register (the adapted-encoder NER model)
"""

from kfp import dsl

from kfnlp.components.evaluate_ner.component import evaluate_ner
from kfnlp.components.preprocess_ner.component import preprocess_ner
from kfnlp.components.train_ner.component import train_ner
from kfnlp.pipelines.wiring import DownstreamTask, adapt_then_task, documented


@dsl.pipeline(
    name="adapt-then-ner",
    description="Domain-adapt a masked-LM, fine-tune NER from the base and the adapted encoder, compare.",
)
@documented("adapt-then-ner")
def adapt_then_ner(
    model: str = "builtin:splade-tiny",
    preprocess_ner_source: str = "builtin:wnut16",
    mask_eval_strategy: str = "token",
    train_mlm_learning_rate: float = 5e-4,
    train_mlm_num_epochs: float = 3.0,
    train_mlm_max_steps: int = 300,
    train_mlm_batch_size: int = 32,
    train_mlm_seed: int = 42,
    train_mlm_masking: str = "token",
    train_ner_learning_rate: float = 5e-4,
    train_ner_num_epochs: float = 10.0,
    train_ner_max_steps: int = -1,
    train_ner_batch_size: int = 16,
    train_ner_seed: int = 42,
    register_model_name: str = "kfnlp-ner-wnut16-adapted",
    promote_margin: float = 0.0,
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
    """The typed parameters are the settings people change most (their defaults: the embedded defaults);
    every other setting is in the stage's JSON parameter. The embedded defaults (``kfnlp run``, ``kfnlp compile``) set
    ``preprocess.source: ner:train``: adapt on the NER training sentences (task-adaptive
    pretraining)."""
    ner_data = preprocess_ner(
        config=preprocess_ner_config, tokenizer=model, source=preprocess_ner_source
    ).set_display_name("preprocess-ner")
    adapt_then_task(
        DownstreamTask("ner", train_ner, evaluate_ner),
        model,
        ner_data.outputs["dataset"],
        {
            "preprocess": preprocess_config,
            "mask_eval": mask_eval_config,
            "train_mlm": train_mlm_config,
            "evaluate": evaluate_config,
            "train_task": train_ner_config,
            "evaluate_task": evaluate_ner_config,
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
                "learning_rate": train_ner_learning_rate,
                "num_epochs": train_ner_num_epochs,
                "max_steps": train_ner_max_steps,
                "batch_size": train_ner_batch_size,
                "seed": train_ner_seed,
            },
            "gate": {"model_name": register_model_name, "margin": promote_margin},
        },
    )
