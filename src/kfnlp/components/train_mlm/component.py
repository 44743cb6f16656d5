from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_mlm(config: str, base_model: str, dataset: Input[Dataset], eval_set: Input[Dataset], model: Output[Model]):
    """Adapt a masked-LM to the domain corpus with the transformers Trainer."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import destination, source, stage_guard, with_checkpoint_dir
    from kfnlp.stages.train_mlm import STAGE, train_mlm

    with stage_guard(STAGE.name, model):
        cfg = with_checkpoint_dir(from_json(STAGE.config, config, STAGE.section), model)
        train_mlm(source(dataset), source(eval_set), destination(model), cfg, base_model)
