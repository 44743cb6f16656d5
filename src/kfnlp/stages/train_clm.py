"""train-clm: continued pretraining of a causal LM (GPT-2, Llama, Qwen...) on the preprocessed chunks, with the
transformers Trainer; from scratch (a new GPT-2 on the base model's tokenizer) or with LoRA adapters (peft)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from kfnlp.config import check_at_least, option
from kfnlp.data.chunking import IGNORE_INDEX
from kfnlp.errors import InputError
from kfnlp.stages.entry import Input, Stage
from kfnlp.training.config import TrainingConfig

log = logging.getLogger(__name__)


@dataclass
class TrainClmConfig(TrainingConfig):
    """The course's causal-LM defaults (chapter 7 section 6: lr 5e-4, weight decay 0.1, batch 32, one epoch,
    warmup); gradient accumulation and the cosine schedule are left out (a CPU default)."""

    learning_rate: float = option(5e-4, "peak learning rate (> 0)")
    weight_decay: float = option(0.1, "AdamW weight decay")
    batch_size: int = option(32, "training batch size per device")
    num_epochs: float = option(1.0, "passes over the training data (ignored when max_steps > 0)")
    warmup_ratio: float = option(0.1, "share of the training steps spent on linear warmup")
    eval_strategy: Literal["epoch", "steps", "no"] = option(
        "no",
        "when to score the dataset's test split (eval_loss) during training: epoch, steps or no; "
        "evaluate-clm scores the final model either way",
    )
    max_train_chunks: int | None = option(None, "seeded downsample of the training chunks")
    from_scratch: bool = option(
        False,
        "train a new GPT-2 (random weights shaped by the scratch_* fields, positions = the dataset's chunk size) "
        "instead of continuing base_model, which then only gives the tokenizer",
    )
    scratch_layers: int = option(2, "from_scratch: transformer blocks")
    scratch_heads: int = option(2, "from_scratch: attention heads per block (must divide scratch_hidden)")
    scratch_hidden: int = option(128, "from_scratch: hidden size (embedding width)")
    lora: bool = option(
        False,
        "train LoRA adapters (peft) instead of every weight; the model artifact holds the adapter and names "
        "its base (adapter_base), unless lora_merge",
    )
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)")
    lora_dropout: float = option(0.05, "dropout on the LoRA input")
    lora_target_modules: list[str] | None = option(
        None, "module names to adapt (GPT-2: c_attn, c_proj, c_fc; Llama: q_proj, v_proj...); default: peft's"
    )
    lora_merge: bool = option(False, "merge the adapters into the base weights before saving: a plain full model")

    def __post_init__(self):
        super().__post_init__()
        for name in ("scratch_layers", "scratch_heads", "scratch_hidden", "lora_r", "lora_alpha"):
            check_at_least(getattr(self, name), 1, name)
        if self.max_train_chunks is not None:
            check_at_least(self.max_train_chunks, 1, "max_train_chunks")
        if self.scratch_hidden % self.scratch_heads:
            raise ValueError(f"scratch_heads ({self.scratch_heads}) must divide scratch_hidden ({self.scratch_hidden})")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.lora_target_modules is not None and not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module (or be unset: peft's default)")
        if self.lora and self.from_scratch:
            raise ValueError("lora adapts a pretrained model and from_scratch trains a new one: set only one")
        if self.lora_merge and not self.lora:
            raise ValueError("lora_merge merges LoRA adapters: it needs lora: true")


class CausalCollator:
    """Batches of chunks for a causal LM, as ``DataCollatorForLanguageModeling(mlm=False)`` makes them: labels
    are the input ids (the model shifts them), -100 at padding. Also -100 at each row's first position, which no
    position predicts: the loss is the same, and the Trainer's count of labelled tokens (the divisor of
    gradient accumulation) is then the count of predicted ones for every model (see
    :func:`kfnlp.modeling.causal_token_loss`). Padding is read from the attention mask, not from the pad id: a
    tokenizer that pads with its eos token keeps eos as a target."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows):
        import torch

        length = max(len(row["input_ids"]) for row in rows)
        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            ids[i, :n] = torch.as_tensor(np.asarray(row["input_ids"]), dtype=torch.long)
            mask[i, :n] = torch.as_tensor(np.asarray(row.get("attention_mask", np.ones(n))), dtype=torch.long)
        labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
        labels[:, 0] = IGNORE_INDEX
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def scratch_model(config: TrainClmConfig, tokenizer, positions: int):
    """A new GPT-2 of ``tokenizer``'s vocabulary and ``positions`` positions, seeded by the caller's set_seed."""
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tokenizer.eos_token_id
    shape = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=positions,
        n_embd=config.scratch_hidden,
        n_layer=config.scratch_layers,
        n_head=config.scratch_heads,
        bos_token_id=eos if tokenizer.bos_token_id is None else tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(shape)


def check_fits(model, tokenizer, chunk_length: int, base_model: str, dataset: str) -> None:
    """Refuse, in one line, data the model cannot read: token ids past its embeddings, chunks past its positions."""
    embeddings = model.get_input_embeddings().num_embeddings
    if embeddings < len(tokenizer):
        raise InputError(
            f"{base_model}: {embeddings} token embeddings for a tokenizer of {len(tokenizer)} tokens; "
            "use the model's own tokenizer"
        )
    limit = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and chunk_length > limit:
        raise InputError(
            f"{dataset}: chunks of {chunk_length} tokens are longer than {base_model}'s {limit} positions; "
            f"preprocess with chunk_size at most {limit}"
        )


def train_clm(dataset: str, output: str, config: TrainClmConfig, base_model: str) -> dict:
    """Continue ``base_model`` (or, ``from_scratch``, a new GPT-2 on its tokenizer) on the ``dataset`` chunks;
    write a model artifact. With ``config.num_processes`` > 1, train data-parallel in that many torchrun workers."""
    from kfnlp.training import distributed

    if distributed.should_launch(config.num_processes):
        return distributed.launch(
            "train_clm", config.num_processes, dataset=dataset, output=output, config=config, base_model=base_model
        )
    from transformers import set_seed

    from kfnlp.artifacts import open_dataset
    from kfnlp.modeling import (
        WithoutModelCard,
        add_lora,
        causal_token_loss,
        check_causal_tokenizer,
        load_causal_lm,
        load_tokenizer,
        merge_adapter,
    )
    from kfnlp.training import resolve_precision
    from kfnlp.training.run import TrainerJob, run_trainer
    from kfnlp.training.splits import seeded_sample

    started = time.monotonic()
    data = open_dataset(dataset)
    set_seed(config.seed)
    # the model first: "not a causal LM" says more about a BERT than its tokenizer's missing eos token
    model = None if config.from_scratch else merge_adapter(load_causal_lm(base_model))  # an adapter: its merge
    tokenizer = check_causal_tokenizer(load_tokenizer(base_model), base_model)
    data.check_vocabulary(tokenizer)
    splits = data.splits()
    train = splits["train"]
    chunk_length = len(train[0]["input_ids"])
    if model is None:
        set_seed(config.seed)  # the same seed gives the same initial weights
        model = scratch_model(config, tokenizer, chunk_length)
    check_fits(model, tokenizer, chunk_length, base_model, dataset)
    for settings in (model.config, model.generation_config):  # saved: generation then pads without a warning
        if settings is not None and settings.pad_token_id is None:
            settings.pad_token_id = tokenizer.pad_token_id
    if config.lora:
        model = add_lora(
            model,
            base_model,
            r=config.lora_r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            targets=config.lora_target_modules,
            key="train_clm.lora_target_modules",
        )
    trainable, total = _parameters(model)

    train = (
        seeded_sample(train, config.max_train_chunks, config.seed)
        .select_columns(["input_ids", "attention_mask"])
        .with_format("numpy")
    )
    evaluation = splits["test"].select_columns(["input_ids", "attention_mask"]).with_format("numpy")
    precision = resolve_precision(config.mixed_precision)
    log.info(
        "train-clm: %d chunks of %d, precision %s, %s, %d of %d parameters trained",
        len(train),
        chunk_length,
        precision,
        "from scratch" if config.from_scratch else ("LoRA" if config.lora else "every weight"),
        trainable,
        total,
    )
    lora = _lora_facts(model, config)
    facts = {"task": "clm", "base_model": base_model, "from_scratch": config.from_scratch}
    if lora and not config.lora_merge:
        facts["adapter_base"] = _lasting_reference(base_model)  # load_causal_lm loads the adapter onto it
    job = TrainerJob(
        model=model,
        tokenizer=tokenizer,
        train=train,
        evaluation=evaluation,
        collator=CausalCollator(tokenizer.pad_token_id),
        precision=precision,
        started=started,
        run_inputs={"base_model": base_model, "dataset": data.fingerprint},
        arguments={"save_strategy": "steps", "prediction_loss_only": True, "dataloader_drop_last": False},
        summary_facts={
            "train_chunks": len(train),
            "trainable_parameters": trainable,
            "parameters": total,
            **({"lora": lora} if lora else {}),
        },
        manifest_facts={
            **facts,
            **({"lora": lora} if lora else {}),
            "dataset_fingerprint": data.fingerprint,
            "tokenizer_fingerprint": data.manifest["tokenizer_fingerprint"],
        },
        loss=causal_token_loss,
        saved_model=merge_adapter if config.lora_merge else WithoutModelCard if config.lora else None,
    )
    return run_trainer("train-clm", output, config, job)


def _lasting_reference(ref: str) -> str:
    """``ref`` as an adapter's base should name it: a relative local path made absolute (the adapter is loaded
    later, from another directory); other references (Hub id, builtin:, s3://, models:/) as they are."""
    path = Path(ref).expanduser()
    if ":" not in ref and not path.is_absolute() and path.exists():
        return str(path.resolve())
    return ref


def _parameters(model) -> tuple[int, int]:
    """(trained, all) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _lora_facts(model, config: TrainClmConfig) -> dict | None:
    """The LoRA settings as peft resolved them (the default target modules filled in), or None without LoRA."""
    if not config.lora:
        return None
    lora = model.peft_config["default"]
    return {
        "r": lora.r,
        "alpha": lora.lora_alpha,
        "dropout": lora.lora_dropout,
        "target_modules": sorted(lora.target_modules),
        "merged": config.lora_merge,
    }


STAGE = Stage(
    name="train-clm",
    config=TrainClmConfig,
    function=train_clm,
    help="continue pretraining a causal LM on the corpus (full, from scratch or LoRA)",
    inputs=(
        Input("dataset", "dataset artifact from preprocess", required=True, kind="artifact"),
        Input("output", "model artifact directory to write", required=True),
        Input(
            "base_model",
            "causal LM to continue (Hub id, path, model artifact or builtin:gpt2-imdb); its tokenizer with from_scratch",
            default="builtin:gpt2-imdb",
            kind="model",
        ),
    ),
    example="max_steps=100",
    trains=True,
    hub=True,
    cache=False,
)
