from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_mlm(
    config: str,
    base_model: str,
    dataset: Input[Dataset],
    eval_set: Input[Dataset],
    model: Output[Model],
    trial: str = "",
    learning_rate: Optional[float] = None,
    num_epochs: Optional[float] = None,
    max_steps: Optional[int] = None,
    batch_size: Optional[int] = None,
    seed: Optional[int] = None,
    masking: Optional[str] = None,
):
    """Adapt a masked-LM to the domain corpus with the transformers Trainer; ``trial`` (a sweep's trial)
    overrides config keys,
    after the typed inputs (the KFP UI's fields; None: not given)."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import stage_guard, train_stage
    from kfnlp.stages.train_mlm import STAGE, train_mlm

    with stage_guard(STAGE.name, model, trial=trial):
        knobs = {
            "learning_rate": learning_rate,
            "num_epochs": num_epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "seed": seed,
            "masking": masking,
        }
        cfg = from_json(STAGE.config, config, STAGE.section, knobs)
        train_stage(
            STAGE, train_mlm, cfg, model, trial=trial, dataset=dataset, eval_set=eval_set, base_model=base_model
        )
