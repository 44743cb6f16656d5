"""Where NER sentences come from: CoNLL files, Hub datasets with ``tokens`` +
``ner_tags`` columns, or the embedded WNUT-16 tweets (``builtin:wnut16``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kfnlp.assets import BUILTIN_PREFIX, builtin_data_file
from kfnlp.data.conll import Sentence, read_conll
from kfnlp.errors import InputError, KfnlpError
from kfnlp.storage import check_input, local_input, sha256_file

HUB_SPLITS = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}


@dataclass
class NerSource:
    splits: dict[str, list[Sentence]]  # "train" always; "validation"/"test" when the source has them
    labels: list[str] | None = None  # the source's own label list (Hub ClassLabel names)
    origin: list[dict] = field(default_factory=list)


def read_conll_source(source: str, encoding: str = "utf-8") -> tuple[list[Sentence], dict]:
    if source.startswith(BUILTIN_PREFIX):
        path = builtin_data_file(source[len(BUILTIN_PREFIX) :])
        origin = {"builtin": source[len(BUILTIN_PREFIX) :]}
    else:
        path = Path(local_input(source)).expanduser()
        if not path.is_file():
            raise InputError(f"{source}: no such file (expected a CoNLL file: token ... tag per line)")
        origin = {"file": path.name}
    sentences = read_conll(path, encoding)
    origin["sha256"] = sha256_file(path)
    return sentences, origin


def read_hub(
    dataset_id: str, config: str | None, tokens_column: str, tags_column: str, labels: list[str] | None = None
) -> NerSource:
    """Splits of a Hub dataset; tag ids are named by the ClassLabel feature, else by ``labels``."""
    import datasets

    try:
        data = datasets.load_dataset(dataset_id, config)
    except Exception as exc:  # network, auth and missing-dataset errors differ by version
        raise InputError(f"hf:{dataset_id}: cannot load from the Hub ({exc})") from None
    splits: dict[str, list[Sentence]] = {}
    for name, aliases in HUB_SPLITS.items():
        split = next((data[a] for a in aliases if a in data), None)
        if split is None:
            continue
        for column in (tokens_column, tags_column):
            if column not in split.column_names:
                raise InputError(f"hf:{dataset_id}: no column {column!r}; available: {', '.join(split.column_names)}")
        feature = split.features[tags_column]
        names = getattr(getattr(feature, "feature", None), "names", None)
        if names is None and not isinstance(split[0][tags_column][0] if len(split) else "", str):
            if not labels:
                raise InputError(
                    f"hf:{dataset_id}: {tags_column!r} holds ids without ClassLabel names; "
                    "set preprocess_ner.labels to the label of each id, in order"
                )
            names = labels
        labels = list(names) if names else labels
        try:
            named = [[names[t] for t in tags] if names else list(tags) for tags in split[tags_column]]
        except IndexError:
            raise InputError(f"hf:{dataset_id}/{name}: a tag id is outside the {len(names)} labels") from None
        sentences = []
        for i, (tokens, tags) in enumerate(zip(split[tokens_column], named, strict=True)):
            where = f"hf:{dataset_id}/{name} row {i}"
            if len(tokens) != len(tags):
                raise InputError(f"{where}: {len(tokens)} tokens but {len(tags)} tags")
            if tokens:
                sentences.append(Sentence(list(tokens), tags, where))
        splits[name] = sentences
    if "train" not in splits:
        raise InputError(f"hf:{dataset_id}: no train split (found {', '.join(data)})")
    return NerSource(splits, labels, [{"hub": dataset_id, "config": config}])


def load_ner_source(
    source: str,
    validation_source: str | None = None,
    test_source: str | None = None,
    encoding: str = "utf-8",
    hf_config: str | None = None,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    labels: list[str] | None = None,
) -> NerSource:
    if source.startswith("hf:"):
        result = read_hub(source[3:], hf_config, tokens_column, tags_column, labels)
    else:
        train, origin = read_conll_source(source, encoding)
        result = NerSource({"train": train}, None, [origin])
    for name, extra in (("validation", validation_source), ("test", test_source)):
        if extra:
            result.splits[name], origin = read_conll_source(extra, encoding)
            result.origin.append({**origin, "split": name})
    return result


def check_ner_source(source: str, key: str) -> None:
    """Fast check, without reading it, that an NER source can be read."""
    from kfnlp.assets import NER_DATA

    if not source or not source.strip():
        raise InputError(f"{key}: empty source; expected a CoNLL file, hf:DATASET or builtin:wnut16")
    if source.startswith("hf:"):
        if not source[3:].strip():
            raise InputError(f"{key}: {source!r}: expected hf:DATASET_ID")
        return
    if source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        if name not in NER_DATA:
            raise InputError(f"{key}: {source} is not an NER dataset; available: builtin:wnut16")
        try:
            builtin_data_file(name)
        except Exception as exc:
            raise InputError(f"{key}: {exc}") from None
        return
    try:
        check_input(source, _check_conll_file)
    except KfnlpError as exc:
        raise InputError(f"{key}: {exc}") from None


def _check_conll_file(source: str) -> None:
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"{source}: no such file (expected a CoNLL file: token ... tag per line)")
    if path.stat().st_size == 0:
        raise InputError(f"{source}: file is empty")
