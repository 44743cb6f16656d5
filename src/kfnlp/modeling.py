"""Loading models safely, the device they run on, and the training losses.

Models load from a Hub id, a local directory, ``builtin:NAME`` or a kfnlp model
artifact, always as safetensors and never with remote code.

The stock ``*ForMaskedLM`` forward projects every position onto the whole vocabulary
although only the ~15% masked positions carry a label; for a small encoder that
projection is most of the compute. :func:`enable_sparse_mlm_loss` swaps the
instance's forward for one that runs the encoder, gathers the labelled positions
and applies the head (and the loss) to those only: the same loss, a fraction of the
work. Unknown architectures keep the stock forward. Other models train with
:func:`labelled_token_loss`, which keeps gradient accumulation equal to one large batch.
"""

from __future__ import annotations

import json
import logging
import shutil
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kfnlp.assets import resolve_model_ref
from kfnlp.config import bounded, shown
from kfnlp.data.chunking import IGNORE_INDEX
from kfnlp.errors import ConfigError
from kfnlp.storage import MANIFEST, read_manifest, store_for

log = logging.getLogger(__name__)

SAFE_LOAD = {"use_safetensors": True, "trust_remote_code": False}
TOKENIZER_SUFFIXES = (".model", ".spm", ".tiktoken")  # sentencepiece, Marian, tiktoken vocabularies


def model_dir(ref: str) -> str:
    """Resolve a model reference to something ``from_pretrained`` takes."""
    if ref.startswith("models:/"):  # the model registry: models:/NAME/VERSION or models:/NAME@ALIAS
        from kfnlp.registry import Registry

        return str(Registry().download(ref))
    store = store_for(ref)
    if store.local_path(ref) is None:  # a model artifact in a remote store: a verified local copy
        return str(store.open_artifact(ref, kind="model")[0])
    ref = resolve_model_ref(ref)
    path = Path(ref)
    if (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        if manifest.get("kind") != "model":
            raise ConfigError(f"{ref}: a {manifest.get('kind')} artifact, not a model")
    return ref


def _has_tokenizer_files(path: Path) -> bool:
    """True if ``path`` holds a file a tokenizer is read from (tokenizer.json, vocab.txt, a
    sentencepiece model...): a model directory saved without its tokenizer has none."""
    return any(
        file.name.startswith(("tokenizer", "vocab")) or file.suffix in TOKENIZER_SUFFIXES or file.name == "merges.txt"
        for file in path.iterdir()
    )


def _check_model_type(config_file: Path, ref: str) -> None:
    """Refuse a config.json transformers cannot map to a model class without running the model's own code."""
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{ref}: unreadable config.json ({bounded(str(exc))})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str):
        return  # transformers may still recognise it; a failure is reported by the loader
    from transformers import __version__ as transformers_version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type in CONFIG_MAPPING_NAMES:
        return
    known = f"transformers {transformers_version} does not know model_type {shown(model_type)}"
    if "auto_map" in config:
        raise ConfigError(
            f"{ref}: {known}, and kfnlp never runs a model's own code (its config.json has an auto_map); "
            "use a model of a type transformers supports"
        )
    raise ConfigError(f"{ref}: {known} (config.json); use a model of a type transformers supports")


def check_model_files(path: Path, ref: str, *, model: bool = True, tokenizer: bool = True) -> None:
    """Refuse, in one line, a local directory that cannot give a ``model`` (config.json of a model type
    transformers knows) or a ``tokenizer`` (its files): transformers would fail on it with a long
    message, or (a directory without tokenizer files) load a tokenizer that knows only its special tokens."""
    if not any(path.iterdir()):
        raise ConfigError(f"{ref}: empty directory; expected a model directory (config.json, weights, tokenizer)")
    config_file = path / "config.json"
    if config_file.is_file():
        _check_model_type(config_file, ref)
    elif model:
        raise ConfigError(f"{ref}: not a model directory (no config.json)")
    if tokenizer and not _has_tokenizer_files(path):
        raise ConfigError(
            f"{ref}: no tokenizer files (tokenizer.json, vocab.txt, ...); save the tokenizer with the model"
        )


# model types whose position ids start after the padding id (RoBERTa's create_position_ids_from_input_ids):
# max_position_embeddings counts pad_token_id + 1 positions no token can use
PADDING_OFFSET_TYPES = frozenset(
    {
        "roberta",
        "xlm-roberta",
        "xlm-roberta-xl",
        "camembert",
        "roberta-prelayernorm",
        "data2vec-text",
        "longformer",
        "ibert",
        "mpnet",
        "luke",
    }
)


def position_limit(ref: str) -> int | None:
    """The most tokens (special tokens included) one input of ``ref``'s model may hold: config.json's
    ``max_position_embeddings``, less ``pad_token_id + 1`` for the RoBERTa family. None when unknown:
    no config.json (a tokenizer alone), relative positions only, or a registry or remote reference
    (whose files preflight does not download). Reads the config only, never the weights."""
    config = _read_config(ref)
    if not isinstance(config, dict) or config.get("position_biased_input") is False:  # DeBERTa-v2: relative only
        return None
    limit = config.get("max_position_embeddings", config.get("n_positions"))
    if not isinstance(limit, int) or isinstance(limit, bool):
        return None
    if config.get("model_type") in PADDING_OFFSET_TYPES:
        padding = config.get("pad_token_id")
        limit -= (padding if isinstance(padding, int) else 1) + 1
    return limit if limit > 0 else None


def _read_config(ref: str) -> Any:
    """``ref``'s config.json, or None: a local directory, ``builtin:NAME`` or a Hub id in the local Hugging Face
    cache (never the network: a preflight takes a second; the stage checks again once it has the model's files)."""
    if ref.startswith("models:/") or store_for(ref).local_path(ref) is None:
        return None
    try:
        path = Path(resolve_model_ref(ref)).expanduser()
    except ConfigError:
        return None
    if path.is_dir():
        file = path / "config.json"
    elif path.exists():
        return None
    else:
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(ref, "config.json")
        except ValueError:  # not a valid Hub id: check_model_ref's business
            return None
        if not isinstance(cached, str):
            return None
        file = Path(cached)
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def check_position_limit(ref: str, lengths: Iterable[tuple[str, int]]) -> None:
    """Refuse, naming the key, a sequence length (``(key, value)`` of ``lengths``) over ``ref``'s
    :func:`position_limit`: the model would fail on such an input with a raw tensor error, minutes later."""
    lengths = list(lengths)
    if not lengths:
        return
    limit = position_limit(ref)
    for key, value in lengths:
        if limit is not None and value > limit:
            raise ConfigError(
                f"{key}: {value} tokens is more than the model's position limit of {limit} "
                f"({ref}, config.json max_position_embeddings); use at most {limit}",
                key,
            )


def _load(loader, ref: str, what: str, *, location: str | None = None, **kwargs):
    location = location or model_dir(ref)
    if Path(location).is_dir():
        check_model_files(Path(location), ref, model=what != "tokenizer", tokenizer=what == "tokenizer")
    try:
        return loader.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:  # ValueError: transformers' word for a model or tokenizer it cannot make
        raise ConfigError(f"cannot load {what} {ref!r}: {bounded(str(exc).splitlines()[0])}") from None


def inference_device():
    """The GPU when torch sees one (the first; CUDA_VISIBLE_DEVICES says which), else the CPU: where the
    evaluation stages and predict run the model."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(ref: str, *, split_words: bool = False):
    """``ref``'s tokenizer. With ``split_words`` it is to read pre-split words (``is_split_into_words``, as
    in NER) and must give each word the sub-tokens it gets in running text: a byte-level BPE tokenizer
    (RoBERTa, GPT-2, ...) reads a lone word without the space that marks a word start ("lot" as ``l``,
    ``ot``, but ``Ġlot`` in text), so such a tokenizer is loaded with ``add_prefix_space=True``. Saved that
    way with the data and the model, it reads text in ``pipeline()`` as training read the words."""
    from transformers import AutoTokenizer

    tokenizer = _load(AutoTokenizer, ref, "tokenizer", trust_remote_code=False)
    if not set(tokenizer.get_vocab()) - set(tokenizer.all_special_tokens):
        raise ConfigError(f"cannot load tokenizer {ref!r}: it has no vocabulary beyond its special tokens")
    if split_words and not _words_tokenize_as_in_text(tokenizer):
        tokenizer = _load(AutoTokenizer, ref, "tokenizer", trust_remote_code=False, add_prefix_space=True)
        if _words_tokenize_as_in_text(tokenizer):
            log.info("tokenizer %s: loaded with add_prefix_space=True, so that words tokenize as in text", ref)
        else:
            log.warning(
                "tokenizer %s: words given one by one tokenize differently from running text, even with "
                "add_prefix_space=True; predictions on text may differ from the evaluation's",
                ref,
            )
    return tokenizer


PROBE_WORDS = ["Hello", "world"]


def _words_tokenize_as_in_text(tokenizer) -> bool:
    """True if words given one by one get the sub-tokens they get in running text."""
    split = tokenizer(PROBE_WORDS, is_split_into_words=True, add_special_tokens=False)["input_ids"]
    return split == tokenizer(" ".join(PROBE_WORDS), add_special_tokens=False)["input_ids"]


def load_masked_lm(ref: str):
    from transformers import AutoModelForMaskedLM

    return _load(AutoModelForMaskedLM, ref, "masked-LM model", **SAFE_LOAD)


ADAPTER_CONFIG = "adapter_config.json"  # peft's: a directory with it holds a LoRA adapter, not a whole model
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")  # GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM...
HEAD_KINDS = {
    "ForMaskedLM": "a masked-LM",
    "ForTokenClassification": "a token classifier",
    "ForSequenceClassification": "a sequence classifier",
    "ForQuestionAnswering": "a question-answering model",
    "ForConditionalGeneration": "an encoder-decoder or multimodal model",
}
MAX_ADAPTER_DEPTH = 8  # an adapter on an adapter on ...: a cycle of adapter_base references stops here


def is_adapter(location: str | Path) -> bool:
    """True if ``location`` is a local directory holding a peft (LoRA) adapter rather than a whole model."""
    return (Path(location) / ADAPTER_CONFIG).is_file()


def adapter_base(location: str | Path, ref: str) -> str:
    """The base model reference of the adapter directory ``location``: the manifest's ``adapter_base``
    (a kfnlp model artifact names the reference it was trained on), else peft's ``base_model_name_or_path``."""
    path = Path(location)
    try:  # the manifest as written (a registered copy has the model card in place of peft's README.md)
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        manifest = None
    base = manifest.get("adapter_base") if isinstance(manifest, dict) else None
    if isinstance(base, str) and base:
        return base
    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise ConfigError(f"{ref}: unreadable {ADAPTER_CONFIG} ({bounded(str(exc))})") from None
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{ref}: a LoRA adapter that names no base model ({ADAPTER_CONFIG} base_model_name_or_path)")
    return base


def check_causal_config(config, ref: str) -> None:
    """Refuse, in one line, a checkpoint whose saved architecture has no causal-LM head: ``AutoModelForCausalLM``
    would load a BERT as a decoder with a warning, or put a fresh head on a classifier."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = [name for name in getattr(config, "architectures", None) or [] if isinstance(name, str)]
    if any(name.endswith(CAUSAL_SUFFIXES) for name in architectures):
        return
    if not architectures and getattr(config, "model_type", None) in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return  # a config saved without its architecture: the model type has a causal-LM class
    name = architectures[0] if architectures else f"{getattr(config, 'model_type', 'unknown')} model"
    kind = next((f" ({kind})" for suffix, kind in HEAD_KINDS.items() if name.endswith(suffix)), "")
    raise ConfigError(f"{ref} is a {name}{kind}, not a causal LM; use a decoder model (GPT-2, Llama, Qwen...)")


def load_causal_lm(ref: str, *, _depth: int = 0):
    """A causal LM (``AutoModelForCausalLM``), refusing a checkpoint of another kind. A LoRA adapter (a
    directory with ``adapter_config.json``, as train-clm writes with ``lora`` and no ``lora_merge``) is loaded
    onto its base through ``peft``: a ``PeftModel``; :func:`merge_adapter` makes it a plain model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    location = model_dir(ref)
    if is_adapter(location):
        return _load_adapter(location, ref, _depth)
    config = _load(AutoConfig, ref, "model config", location=location, trust_remote_code=False)
    check_causal_config(config, ref)
    return _load(AutoModelForCausalLM, ref, "causal-LM model", location=location, config=config, **SAFE_LOAD)


def _load_adapter(location: str, ref: str, depth: int):
    from peft import PeftModel

    if depth >= MAX_ADAPTER_DEPTH:
        raise ConfigError(f"{ref}: more than {MAX_ADAPTER_DEPTH} LoRA adapters stacked on each other (a cycle?)")
    if not (Path(location) / ADAPTER_WEIGHTS).is_file():
        raise ConfigError(
            f"{ref}: a LoRA adapter without {ADAPTER_WEIGHTS}; kfnlp loads adapter weights as safetensors only"
        )
    base_ref = adapter_base(location, ref)
    base = merge_adapter(load_causal_lm(base_ref, _depth=depth + 1))  # an adapter's base may itself be one
    log.info("%s: a LoRA adapter on %s", ref, base_ref)
    try:
        return PeftModel.from_pretrained(base, location, is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # peft's words for an adapter that does not fit
        raise ConfigError(
            f"cannot load LoRA adapter {ref!r} onto {base_ref}: {bounded(str(exc).splitlines()[0])}"
        ) from None


def lora_layer_names(model) -> list[str]:
    """The distinct last names of ``model``'s layers LoRA can adapt (``nn.Linear`` and GPT-2's ``Conv1D``), in
    model order: what ``lora_target_modules`` entries name (``c_attn``, ``q_proj``...)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    names = (
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, (torch.nn.Linear, Conv1D))
    )
    return list(dict.fromkeys(names))


def add_lora(
    model, ref: str, *, r: int, alpha: int, dropout: float, targets: list[str] | None, key: str = "lora_target_modules"
):
    """``model`` wrapped by ``peft`` with new LoRA adapters (only they train) on the modules ``targets`` names
    (as peft matches them: the whole module name or its last dotted parts), or on peft's default modules for
    the model type when None. An entry that names no module of the model is refused, in one line: peft would
    adapt the others and drop it silently."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    if targets is not None:
        modules = [name for name, _ in model.named_modules()]
        for target in targets:
            if not any(name == target or name.endswith(f".{target}") for name in modules):
                layers = ", ".join(lora_layer_names(model)[:8])
                raise ConfigError(
                    f"{key}: {target!r} names no module of {ref} ({type(model).__name__}); its linear layers: {layers}",
                    key,
                )
    lora = LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        # GPT-2's Conv1D layers store their weight transposed (peft would switch it on, with a warning)
        fan_in_fan_out=any(isinstance(module, Conv1D) for module in model.modules()),
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:  # peft's word for a model type it has no default modules for, or a layer it cannot adapt
        layers = ", ".join(lora_layer_names(model)[:8])
        raise ConfigError(
            f"{key}: cannot add LoRA to {ref}: {bounded(str(exc).splitlines()[0])} (its linear layers: {layers})",
            key,
        ) from None


def merge_adapter(model):
    """``model`` with its LoRA weights added into the base weights (a plain transformers model, as
    ``pipeline()`` and ``save_pretrained`` want it); a model without an adapter unchanged."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


class WithoutModelCard:
    """``model`` saved as ``save_pretrained`` saves it, less peft's template README.md: an adapter artifact
    then lists no README.md in its manifest, which the model card that register writes would contradict."""

    def __init__(self, model):
        self.model = model

    def save_pretrained(self, directory: str, **kwargs: Any) -> None:
        self.model.save_pretrained(directory, **kwargs)
        (Path(directory) / "README.md").unlink(missing_ok=True)


MANIFEST_OWN_KEYS = ("format", "kind", "created", "files")  # what write_artifact writes itself


def export_model(ref: str, output: str, *, merge: bool = False, location: str | None = None) -> dict[str, Any]:
    """Write ``ref``'s model files (``location``: where they already are locally, e.g. a registry download) to
    the new local directory ``output``, as a model artifact (files, then the manifest, then renamed into place).
    With ``merge`` a LoRA adapter is merged into its base: a plain model directory that ``pipeline()`` and
    ``from_pretrained`` load without peft. Returns what was written."""
    from kfnlp.registry.store import DOWNLOAD_RECORD
    from kfnlp.storage import write_artifact

    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{output}: exists and is not an empty directory; export writes a new one")
    source = Path(location or model_dir(ref))
    if not source.is_dir():
        raise ConfigError(f"{ref}: not a local model directory or artifact; nothing to export")
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        manifest = {}
    facts = {k: v for k, v in manifest.items() if k not in MANIFEST_OWN_KEYS} if isinstance(manifest, dict) else {}
    adapter = is_adapter(source)
    merged = merge and adapter
    model = merge_adapter(load_causal_lm(str(source))) if merged else None
    skipped = {MANIFEST, DOWNLOAD_RECORD, *((ADAPTER_CONFIG, ADAPTER_WEIGHTS) if merged else ())}
    with write_artifact(output, kind="model") as writer:
        for file in sorted(source.rglob("*")):
            relative = file.relative_to(source)
            if file.is_symlink() or not file.is_file() or relative.as_posix() in skipped:
                continue
            target = writer.path / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
        if model is not None:
            model.save_pretrained(str(writer.path))
            facts.pop("adapter_base", None)
            facts["merged_adapter_base"] = adapter_base(source, ref)
            if isinstance(facts.get("lora"), dict):
                facts["lora"] = {**facts["lora"], "merged": True}
        writer.info.update(facts, exported_from=ref, merged=merged)
    log.info("exported %s to %s%s", ref, output, " (LoRA adapter merged into its base)" if merged else "")
    return {"source": ref, "output": str(output), "adapter": adapter and not merged, "merged": merged}


def check_causal_tokenizer(tokenizer, ref: str):
    """Refuse a tokenizer without an end-of-text token (a causal LM separates documents and stops generating
    with it); give one without a padding token its end-of-text token for padding, as GPT-2's course recipe
    does (batches pad with it; the attention mask and the -100 labels keep padding out of every loss)."""
    if tokenizer.eos_token is None:
        raise ConfigError(
            f"{ref}: its tokenizer has no end-of-text token (eos_token); a causal LM needs one to end documents "
            "and generations"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# architecture -> (encoder attribute, function applying the MLM head to hidden states)
def _bert_head(model, hidden):
    return model.cls(hidden)


def _roberta_head(model, hidden):
    return model.lm_head(hidden)


def _distilbert_head(model, hidden):
    hidden = model.vocab_layer_norm(model.activation(model.vocab_transform(hidden)))
    return model.vocab_projector(hidden)


SPARSE_HEADS = {
    "BertForMaskedLM": ("bert", _bert_head),
    "RobertaForMaskedLM": ("roberta", _roberta_head),
    "XLMRobertaForMaskedLM": ("roberta", _roberta_head),
    "CamembertForMaskedLM": ("roberta", _roberta_head),
    "DistilBertForMaskedLM": ("distilbert", _distilbert_head),
}


def _sparse_forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs: Any):
    """Forward that computes head and loss only where ``labels`` != -100.

    Without labels (inference, fill-mask) it is the stock forward. Returns
    ``MaskedLMOutput`` with ``logits`` only for the labelled positions, shape
    (n_labelled, vocab).
    """
    import torch
    from transformers.modeling_outputs import MaskedLMOutput

    num_items = kwargs.pop("num_items_in_batch", None)
    if labels is None:
        return type(self).forward(self, input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    encoder_name, head = SPARSE_HEADS[type(self).__name__]
    encoder_kwargs = {k: v for k, v in kwargs.items() if k in ("token_type_ids", "position_ids")}
    hidden = getattr(self, encoder_name)(input_ids=input_ids, attention_mask=attention_mask, **encoder_kwargs)[0]
    selected = labels != IGNORE_INDEX
    logits = head(self, hidden[selected])
    targets = labels[selected]
    if num_items is not None:
        loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum") / num_items
    elif targets.numel() == 0:
        loss = logits.sum() * 0.0  # keeps the graph; stock forward would give NaN here
    else:
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
    return MaskedLMOutput(loss=loss, logits=logits)


def enable_sparse_mlm_loss(model) -> bool:
    """Patch this model instance to compute the MLM head only at labelled positions.

    Returns False (and changes nothing) for architectures without an adapter.
    """
    name = type(model).__name__
    if name not in SPARSE_HEADS:
        log.info("no sparse MLM head for %s; using the stock forward", name)
        return False
    model.forward = types.MethodType(_sparse_forward, model)
    model.accepts_loss_kwargs = True  # the Trainer's word for "divides its loss by num_items_in_batch"
    return True


def disable_sparse_mlm_loss(model) -> None:
    model.__dict__.pop("forward", None)
    model.__dict__.pop("accepts_loss_kwargs", None)


def labelled_token_loss(outputs, labels, num_items_in_batch=None, weight=None):
    """Cross-entropy summed over the labelled positions and divided by the labelled positions of the
    whole optimizer step (``num_items_in_batch``: all its accumulated batches), so that accumulating
    gradients over several batches gives the step one large batch gives.

    The Trainer's ``compute_loss_func`` for models whose own loss is a per-batch mean: their forward
    takes ``**kwargs``, so the Trainer counts on them to divide by ``num_items_in_batch`` and no longer
    divides by the accumulation steps; their losses would add up instead (BERT's heads in transformers 5).
    ``weight``: one loss weight per class (imbalanced classes), as ``cross_entropy`` takes it.
    """
    import torch

    logits = outputs["logits"]
    labels = labels.to(logits.device)
    total = torch.nn.functional.cross_entropy(
        logits.flatten(0, -2).float(),
        labels.flatten(),
        weight=None if weight is None else weight.to(logits.device),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    count = num_items_in_batch if num_items_in_batch is not None else (labels != IGNORE_INDEX).sum()
    return total / torch.as_tensor(count, device=total.device).clamp(min=1)  # no labels: 0, not NaN


def causal_token_loss(outputs, labels, num_items_in_batch=None):
    """:func:`labelled_token_loss` of a causal LM: the logits at position i predict the label at i + 1, as
    the stock ``ForCausalLMLoss`` shifts them. ``num_items_in_batch`` must count the predicted positions:
    the Trainer counts the labels ``!= -100`` (over ``labels[..., 1:]`` only for the models it knows shift,
    which in transformers 5 leaves GPT-2 out), so train-clm's collator sets the first label of each row to
    -100 (no position predicts it) and both counts agree. The labels move left, not the logits: slicing
    the logits would copy the largest tensor of the step (measured 1.35 s against 0.86 s a step)."""
    import torch

    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    return labelled_token_loss(outputs, shifted, num_items_in_batch)


def load_token_classifier(ref: str, labels: list[str] | None = None):
    """A token-classification model. With ``labels``, a new task head for them on
    ``ref``'s encoder: a masked-LM checkpoint (e.g. a train-mlm artifact) loses its
    MLM head, a classifier with another label set gets a fresh one. Without, the
    model as saved (for inference)."""
    from transformers import AutoModelForTokenClassification

    return _load(AutoModelForTokenClassification, ref, "token-classification model", **_head_kwargs(labels))


def _head_kwargs(labels: list[str] | None) -> dict[str, Any]:
    """``from_pretrained`` keywords of a classifier: safe loading, and with ``labels`` a new head for them."""
    kwargs: dict[str, Any] = dict(SAFE_LOAD)
    if labels is not None:
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    return kwargs


def load_sequence_classifier(ref: str, labels: list[str] | None = None):
    """A sequence-classification model. With ``labels``, a new task head for them on ``ref``'s
    encoder: a masked-LM checkpoint (e.g. a train-mlm artifact) loses its MLM head, a classifier
    with another label set gets a fresh one. Without, the model as saved (for inference)."""
    from transformers import AutoModelForSequenceClassification

    return _load(AutoModelForSequenceClassification, ref, "sequence-classification model", **_head_kwargs(labels))
