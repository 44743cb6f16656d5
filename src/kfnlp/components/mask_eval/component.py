from typing import Optional

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kfnlp.components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def mask_eval(config: str, dataset: Input[Dataset], eval_set: Output[Dataset], strategy: Optional[str] = None):
    """Mask the held-out split once with a fixed seed: a stable perplexity benchmark. ``strategy`` (None: not given)
    wins over config's."""
    from kfnlp.config import from_json
    from kfnlp.launch.in_pod import destination, source, stage_guard
    from kfnlp.stages.mask_eval import STAGE, mask_eval

    with stage_guard(STAGE.name, eval_set):
        mask_eval(
            source(dataset),
            destination(eval_set),
            from_json(STAGE.config, config, STAGE.section, {"strategy": strategy}),
        )
