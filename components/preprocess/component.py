from kfp import dsl
from kfp.dsl import Dataset, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess(config: str, tokenizer: str, dataset: Output[Dataset]):
    """Read a corpus, split it, tokenize and chunk it into a masked-LM dataset."""
    from kfnlp.config import from_json
    from kfnlp.kfp_runtime import stage_guard
    from kfnlp.stages.preprocess import PreprocessConfig, preprocess

    with stage_guard("preprocess", dataset):
        preprocess(dataset.path, from_json(PreprocessConfig, config, "preprocess"), tokenizer)
