from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train_ner(
    config: str,
    dataset: Input[Dataset],
    model: Output[Model],
    base_model_ref: str = "",
    base_model: Optional[Input[Model]] = None,
):
    """Fine-tune an encoder (a Hub id, path or builtin, or a train-mlm artifact) for token classification."""
    from kfnlp.config import from_json
    from kfnlp.kfp_runtime import stage_guard
    from kfnlp.stages.train_ner import TrainNerConfig, train_ner

    with stage_guard("train-ner", model):
        encoder = base_model.path if base_model is not None else base_model_ref
        train_ner(dataset.path, model.path, from_json(TrainNerConfig, config, "train_ner"), encoder)
