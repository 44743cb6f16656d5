from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess(
    config: str,
    tokenizer: str,
    dataset: Output[Dataset],
    corpus: Optional[Input[Dataset]] = None,
    source: Optional[str] = None,
):
    """Read a corpus, split it, tokenize and chunk it into a masked-LM dataset. With ``corpus`` (a
    preprocess-ner or preprocess-cls dataset) the text is that dataset's training texts instead of ``source``.
    ``source`` (None: not given) wins over config's source."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import destination, stage_guard
    from kfnlp.launch.in_pod import source as local_path  # the name source is the typed input here
    from kfnlp.stages.preprocess import STAGE, preprocess, with_corpus

    with stage_guard(STAGE.name, dataset):
        cfg = from_json(STAGE.config, config, STAGE.section, {"source": source})
        corpus_dir = local_path(corpus) if corpus is not None else None
        preprocess(destination(dataset), with_corpus(cfg, corpus_dir), tokenizer)
