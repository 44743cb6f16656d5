from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_cls(
    config: str,
    dataset: Input[Dataset],
    model: Output[Model],
    base_model_ref: str = "",
    base_model: Optional[Input[Model]] = None,
    trial: str = "",
    learning_rate: Optional[float] = None,
    num_epochs: Optional[float] = None,
    max_steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    seed: Optional[int] = None,
):
    """Fine-tune an encoder (a Hub id, path or builtin, or a train-mlm artifact) for text classification;
    ``trial`` (a sweep's trial) overrides config keys,
    after the typed inputs (the KFP UI's fields; None: not given)."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import stage_guard, train_stage
    from kfnlp.stages.train_cls import STAGE, train_cls

    with stage_guard(STAGE.name, model, trial=trial):
        encoder = base_model if base_model is not None else base_model_ref
        knobs = {
            "learning_rate": learning_rate,
            "num_epochs": num_epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "seed": seed,
        }
        cfg = from_json(STAGE.config, config, STAGE.section, knobs)
        train_stage(STAGE, train_cls, cfg, model, trial=trial, dataset=dataset, base_model=encoder)
