"""train-mlm: adapt a masked-LM to the domain with the transformers Trainer."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from kfnlp.config import option
from kfnlp.masking import DEFAULT_PROBABILITY, MaskingCollator, MaskSpec, Strategy
from kfnlp.stages.entry import Input, Stage
from kfnlp.training.config import TrainingConfig

log = logging.getLogger(__name__)


@dataclass
class TrainMlmConfig(TrainingConfig):
    """The recipe's defaults (lr 2e-5, weight decay 0.01, batch 64, eval each epoch)."""

    batch_size: int = option(64, "training batch size per device")
    max_train_chunks: int | None = option(None, "seeded downsample (the recipe uses 10,000)")
    masking: Strategy = option("token", "dynamic masking while training: single tokens or whole words")
    mask_probability: float | None = option(None, "default: 0.15 token-level, 0.2 whole-word")
    sparse_head: bool = option(True, "MLM head and loss only at masked positions (same loss, faster)")

    def __post_init__(self):
        super().__post_init__()
        if self.mask_probability is not None and not 0.0 < self.mask_probability < 1.0:
            raise ValueError(f"mask_probability must be between 0 and 1, got {self.mask_probability}")
        if self.dataloader_num_workers:  # each worker would count batches from its own copy of the collator
            raise ValueError(
                "dataloader_num_workers must be 0 for train-mlm: it masks each batch with a generator seeded "
                f"by the step, in the training process; got {self.dataloader_num_workers}"
            )


def train_mlm(dataset: str, eval_set: str, output: str, config: TrainMlmConfig, base_model: str) -> dict:
    """Adapt ``base_model`` to the ``dataset`` chunks; write a model artifact. With
    ``config.num_processes`` > 1, train data-parallel in that many torchrun workers."""
    from kfnlp.training import distributed

    if distributed.should_launch(config.num_processes):
        return distributed.launch(
            "train_mlm",
            config.num_processes,
            dataset=dataset,
            eval_set=eval_set,
            output=output,
            config=config,
            base_model=base_model,
        )
    from transformers import set_seed

    from kfnlp.artifacts import open_dataset, open_eval_set
    from kfnlp.modeling import enable_sparse_mlm_loss, load_masked_lm, load_tokenizer
    from kfnlp.training import resolve_precision
    from kfnlp.training.run import TrainerJob, run_trainer
    from kfnlp.training.splits import seeded_sample

    started = time.monotonic()
    data = open_dataset(dataset)
    evals = open_eval_set(eval_set)
    set_seed(config.seed)
    tokenizer = load_tokenizer(base_model)
    data.check_vocabulary(tokenizer)
    model = load_masked_lm(base_model)
    sparse = config.sparse_head and enable_sparse_mlm_loss(model)

    train = seeded_sample(data.splits()["train"], config.max_train_chunks, config.seed)
    train = train.select_columns(["input_ids", "attention_mask", "word_ids"]).with_format("numpy")

    probability = config.mask_probability or DEFAULT_PROBABILITY[config.masking]
    # each data-parallel worker draws its own masks
    collator = MaskingCollator(
        MaskSpec.for_tokenizer(tokenizer, config.masking, probability), seed=config.seed + distributed.rank()
    )
    precision = resolve_precision(config.mixed_precision)
    log.info("train-mlm: %d chunks, precision %s, sparse head %s", len(train), precision, sparse)
    job = TrainerJob(
        model=model,
        tokenizer=tokenizer,
        train=train,
        evaluation=evals.data().with_format("torch"),
        collator=collator,
        precision=precision,
        started=started,
        run_inputs={"base_model": base_model, "dataset": data.fingerprint, "eval_set": evals.fingerprint},
        arguments={
            "save_strategy": "steps",
            "remove_unused_columns": False,  # word_ids must reach the whole-word collator
            "prediction_loss_only": True,
            "dataloader_drop_last": False,
        },
        summary_facts={"sparse_head": sparse, "train_chunks": len(train)},
        manifest_facts={
            "task": "mlm",
            "base_model": base_model,
            "dataset_fingerprint": data.fingerprint,
            "eval_set_fingerprint": evals.fingerprint,
            "tokenizer_fingerprint": data.manifest["tokenizer_fingerprint"],
        },
        on_resume=lambda step: setattr(collator, "batches", step),
    )
    return run_trainer("train-mlm", output, config, job)


STAGE = Stage(
    name="train-mlm",
    config=TrainMlmConfig,
    function=train_mlm,
    help="adapt a masked-LM to the corpus",
    inputs=(
        Input("dataset", "dataset artifact from preprocess", required=True, kind="artifact"),
        Input("eval_set", "eval-set artifact from mask-eval", required=True, kind="artifact"),
        Input("output", "model artifact directory to write", required=True),
        Input(
            "base_model",
            "model to adapt (Hub id, path or builtin:splade-tiny)",
            default="builtin:splade-tiny",
            kind="model",
        ),
    ),
    example="max_steps=100",
    trains=True,
    hub=True,
    cache=False,
)
