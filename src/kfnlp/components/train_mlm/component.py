from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_mlm(config: str, base_model: str, dataset: Input[Dataset], eval_set: Input[Dataset], model: Output[Model]):
    """Adapt a masked-LM to the domain corpus with the transformers Trainer."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import stage_guard, train_stage
    from kfnlp.stages.train_mlm import STAGE, train_mlm

    with stage_guard(STAGE.name, model):
        cfg = from_json(STAGE.config, config, STAGE.section)
        train_stage(STAGE, train_mlm, cfg, model, dataset=dataset, eval_set=eval_set, base_model=base_model)
