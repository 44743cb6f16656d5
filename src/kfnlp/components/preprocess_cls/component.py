from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess_cls(config: str, tokenizer: str, dataset: Output[Dataset], source: Optional[str] = None):
    """Read labelled texts, dedupe them, split them stratified and tokenize them for sequence classification.
    ``source`` (None: not given) wins over config's."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import destination, stage_guard
    from kfnlp.stages.preprocess_cls import STAGE, preprocess_cls

    with stage_guard(STAGE.name, dataset):
        preprocess_cls(
            destination(dataset), from_json(STAGE.config, config, STAGE.section, {"source": source}), tokenizer
        )
