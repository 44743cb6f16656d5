from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess_ner(config: str, tokenizer: str, dataset: Output[Dataset], source: Optional[str] = None):
    """Read labelled sentences, split them, tokenize them and align the labels to sub-tokens. ``source`` (None: not
    given) wins over config's."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import destination, stage_guard
    from kfnlp.stages.preprocess_ner import STAGE, preprocess_ner

    with stage_guard(STAGE.name, dataset):
        preprocess_ner(
            destination(dataset), from_json(STAGE.config, config, STAGE.section, {"source": source}), tokenizer
        )
