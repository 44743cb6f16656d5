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
):
    """Adapt a masked-LM to the domain corpus with the transformers Trainer; ``trial`` (a sweep's trial)
    overrides config keys."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import stage_guard, train_stage
    from kfnlp.stages.train_mlm import STAGE, train_mlm

    with stage_guard(STAGE.name, model, trial=trial):
        cfg = from_json(STAGE.config, config, STAGE.section)
        train_stage(
            STAGE, train_mlm, cfg, model, trial=trial, dataset=dataset, eval_set=eval_set, base_model=base_model
        )
