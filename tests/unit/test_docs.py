"""The generated config reference in docs/configuration.md stays true to the code; config fields describe
themselves (help and kind in their metadata)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import get_type_hints

import pytest

from kfnlp import catalog, docs, stages
from kfnlp.config import fields_of_kind
from kfnlp.launch.cluster.settings import ClusterConfig, StageProfile

REPO = Path(__file__).resolve().parents[2]
CONFIGURATION = REPO / "docs" / "configuration.md"


def config_classes() -> list[type]:
    out = []
    for entry in catalog.PIPELINES.values():
        out.append(entry.config_type)
        hints = get_type_hints(entry.config_type)
        out += [hints[f.name] for f in dataclasses.fields(entry.config_type) if dataclasses.is_dataclass(hints[f.name])]
    return out


def test_configuration_reference_is_current():
    _, current, _ = docs.split_document(CONFIGURATION.read_text(encoding="utf-8"))
    assert current == docs.render_reference(), "docs/configuration.md is stale: run python -m kfnlp.docs"


def test_every_generated_document_is_current():
    found = docs.targets(REPO)
    assert CONFIGURATION in found
    components = sorted(p.parent.name for p in (REPO / "components").glob("*/component.py"))
    assert sorted(p.parent.name for p in found if p.parent.parent.name == "components") == components
    stale = [str(path.relative_to(REPO)) for path, render in found.items() if not docs.update(path, render, check=True)]
    assert not stale, f"stale: {stale}; run python -m kfnlp.docs"


def test_every_key_has_help_in_its_metadata():
    for cls in [*config_classes(), ClusterConfig, StageProfile]:
        helps = docs.field_help(cls)  # raises on a field with no help
        assert all(helps.values()), cls.__name__


def test_a_field_without_help_is_an_error():
    @dataclasses.dataclass
    class Bare:
        size: int = 1

    with pytest.raises(ValueError, match="no help for Bare.size"):
        docs.field_help(Bare)


def test_fields_of_kind_finds_model_references_and_sources_in_declaration_order():
    config = catalog.load_config(catalog.get("adapt-then-ner"))
    found = [(key, kind) for key, _, kind in fields_of_kind(config, "model", "source", "ner_source")]
    assert found == [
        ("model", "model"),
        ("preprocess_ner.source", "ner_source"),
        ("preprocess_ner.validation_source", "ner_source"),
        ("preprocess_ner.test_source", "ner_source"),
        ("preprocess.source", "source"),
    ]
    assert [key for key, _, _ in fields_of_kind(config, "model")] == ["model"]


def test_reference_lists_every_key():
    text = CONFIGURATION.read_text(encoding="utf-8")
    for cls in config_classes():
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not dataclasses.is_dataclass(hints[f.name]):
                assert f"| `{f.name}` |" in text, f"{cls.__name__}.{f.name} missing from the reference"


def test_update_rewrites_only_the_generated_part(tmp_path):
    stale = tmp_path / "configuration.md"
    stale.write_text(f"# intro\n\n{docs.BEGIN}\nold\n{docs.END}\n\nafter\n", encoding="utf-8")
    assert not docs.update(stale, docs.render_reference, check=True)
    assert "old" in stale.read_text(encoding="utf-8")  # check mode writes nothing
    assert not docs.update(stale, docs.render_reference)
    assert docs.update(stale, docs.render_reference, check=True)
    text = stale.read_text(encoding="utf-8")
    assert text.startswith("# intro\n") and text.endswith(f"{docs.END}\n\nafter\n")
    assert "| `learning_rate` |" in text


def test_check_command_fails_on_a_stale_tree(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "components").mkdir()
    for name in ("configuration.md", "cluster.md", "pipelines.md"):
        (tmp_path / "docs" / name).write_text(f"{docs.BEGIN}\n{docs.END}\n", encoding="utf-8")
    for stage in stages.by_name().values():  # one component README per stage entry
        (tmp_path / "components" / stage.section).mkdir()
        (tmp_path / "components" / stage.section / "README.md").write_text(f"{docs.BEGIN}\n{docs.END}\n")
    assert docs.main(["--root", str(tmp_path), "--check"]) == 1
    assert docs.main(["--root", str(tmp_path)]) == 0
    assert docs.main(["--root", str(tmp_path), "--check"]) == 0


def markdown_files() -> list[Path]:
    files = [*(REPO / "docs").glob("*.md"), *(REPO / "src" / "kfnlp" / "components").glob("*/README.md")]
    files += [REPO / "images" / "README.md", REPO / "charts" / "README.md"]
    return sorted(files)


def test_relative_links_resolve():
    link = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
    for md in markdown_files():
        for target in link.findall(md.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (md.parent / target).exists(), f"{md.relative_to(REPO)}: broken link {target}"


def test_containerfile_basics():
    text = (REPO / "images" / "Containerfile").read_text(encoding="utf-8")
    instructions = []  # (INSTRUCTION, arguments) of the lines that start one
    for line in text.splitlines():
        if line and not line.startswith(("#", " ")):
            word, _, rest = line.partition(" ")
            instructions.append((word, rest.strip()))
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] == "1000", "the image must end as non-root USER 1000"
    assert "ARG VARIANT=cpu" in text
    makefile_pin = re.search(r"TORCH_SPEC \?= torch==(\S+)", (REPO / "Makefile").read_text(encoding="utf-8"))
    assert makefile_pin and f"ARG TORCH_VERSION={makefile_pin.group(1)}" in text, "torch pin differs from Makefile"
    assert "org.opencontainers.image." in text
    for word, rest in instructions:
        if word in ("ARG", "ENV"):
            assert not re.search(r"(SECRET|TOKEN|PASSWORD|ACCESS_KEY)", rest, re.I), rest
    # everything COPY'd is admitted by the top-level .dockerignore
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    admitted = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, rest in instructions:
        if word == "COPY" and "--from=" not in rest:  # COPY --from copies from a build stage, not the context
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in admitted, f"COPY {source} is excluded by .dockerignore"
