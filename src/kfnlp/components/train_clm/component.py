from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_clm(config: str, base_model: str, dataset: Input[Dataset], model: Output[Model], trial: str = ""):
    """Continue pretraining a causal LM on the domain corpus with the transformers Trainer; ``trial`` (a
    sweep's trial) overrides config keys."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import stage_guard, train_stage
    from kfnlp.stages.train_clm import STAGE, train_clm

    with stage_guard(STAGE.name, model, trial=trial):
        cfg = from_json(STAGE.config, config, STAGE.section)
        train_stage(STAGE, train_clm, cfg, model, trial=trial, dataset=dataset, base_model=base_model)
