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
):
    """Fine-tune an encoder (a Hub id, path or builtin, or a train-mlm artifact) for text classification;
    ``trial`` (a sweep's trial) overrides config keys."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import stage_guard, train_stage
    from kfnlp.stages.train_cls import STAGE, train_cls

    with stage_guard(STAGE.name, model, trial=trial):
        encoder = base_model if base_model is not None else base_model_ref
        cfg = from_json(STAGE.config, config, STAGE.section)
        train_stage(STAGE, train_cls, cfg, model, trial=trial, dataset=dataset, base_model=encoder)
