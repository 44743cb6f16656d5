"""publish: a registered version's files, tokenizer and model card on the Hugging Face Hub, through
``huggingface_hub`` (``HfApi``), as one commit on the repository's main branch plus a tag per registry version
(``v3``), so ``from_pretrained(REPO, revision="v3")`` loads exactly that version.

The token comes from ``$HF_TOKEN`` only (never a flag, never written anywhere), the endpoint from
``$HF_ENDPOINT`` (default: the public Hub). ``huggingface_hub`` facts relied on (2.x): ``create_repo(exist_ok=True)``
takes a 409 as success; ``upload_folder`` asks ``/preupload`` how to send each file and commits them in one
``/commit/{revision}`` call (README.md's YAML checked first by ``/api/validate-yaml``); ``create_tag`` with
``exist_ok`` takes a 409 as success.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kfnlp.errors import ConfigError, KfnlpError
from kfnlp.serving.deploy import SKIPPED, Target, resolve

log = logging.getLogger(__name__)

REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
PIPELINE_TAGS = {
    "fill-mask": "fill-mask",
    "token-classification": "token-classification",
    "text-classification": "text-classification",
    "text-generation": "text-generation",
}


class PublishError(KfnlpError):
    """The Hub refused or failed a publish."""

    exit_code = 9


def revision(target: Target) -> str:
    """The tag of a registry version on the Hub."""
    return f"v{target.version}"


def card(target: Target, registered_card: str, metrics: dict[str, float]) -> str:
    """The Hub model card: YAML front matter the Hub reads (library, task, base model) over the card register wrote
    (metrics, data lineage, eval set, intended use and limitations), with the registry lineage appended."""
    import yaml

    task = target.tags.get("kfnlp.task", "")
    meta: dict[str, Any] = {"library_name": "transformers", "tags": ["kfnlp"]}
    if task in PIPELINE_TAGS:
        meta["pipeline_tag"] = PIPELINE_TAGS[task]
    base = target.tags.get("kfnlp.base_model", "")
    if base and not base.startswith(("builtin:", "/", ".", "s3://", "models:/")) and REPO_ID.match(base):
        meta["base_model"] = base  # a Hub id; local and builtin bases are named in the lineage below
    lineage = [
        ("registry version", f"{target.model} v{target.version} (Hub revision `{revision(target)}`)"),
        ("base model", base or "unknown"),
        ("training data fingerprint", target.tags.get("kfnlp.dataset_fingerprint", "unknown")),
        ("eval set fingerprint", target.tags.get("kfnlp.eval_set_fingerprint", "unknown")),
        ("primary metric", target.tags.get("kfnlp.primary_metric", "unknown")),
        ("pipeline run", target.tags.get("kfnlp.pipeline_run", "unknown")),
        ("code version", target.tags.get("kfnlp.code_version", "unknown")),
    ]
    rows = "\n".join(f"| {key} | {value} |" for key, value in lineage)
    scores = "\n".join(f"| {key} | {value:.6g} |" for key, value in sorted(metrics.items()))
    body = registered_card.rstrip() if registered_card.strip() else f"# {target.model}"
    return (
        f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n{body}\n\n## Registry lineage\n\n"
        f"| | |\n| --- | --- |\n{rows}\n\n### Metrics recorded with the version\n\n| metric | value |\n"
        f"| --- | --- |\n{scores}\n"
    )


def _token() -> str:
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise ConfigError("publishing needs a Hub token with write access in $HF_TOKEN (it is read from there only)")
    return token


def _hub_error(exc: Exception, repo_id: str, token: str) -> PublishError:
    """One line from a huggingface_hub failure, with the token scrubbed from anything echoed."""
    response = getattr(exc, "response", None)
    status = f"HTTP {response.status_code}: " if response is not None else ""
    text = " ".join(str(exc).split()).replace(token, "***")
    return PublishError(f"publishing to {repo_id} on the Hub failed: {status}{text[:500]}")


def publish(registry, spec: str, repo_id: str, *, private: bool = False) -> dict[str, Any]:
    """Push the version ``spec`` names (``NAME@champion``, ``NAME/3``) to ``repo_id``: model files, tokenizer and
    card in one commit on main, tagged ``vVERSION``. Publishing a version again changes nothing but main."""
    if not REPO_ID.match(repo_id):
        raise ConfigError(f"--hub {repo_id!r}: expected a Hub repository id, NAMESPACE/NAME")
    token = _token()
    from kfnlp.config import FALSE

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in FALSE | {""}:
        raise ConfigError("HF_HUB_OFFLINE is set: publishing needs the Hub (unset it, or set HF_HUB_OFFLINE=0)")
    target = resolve(registry, spec)
    if target.tags.get("kfnlp.adapter_base"):
        log.info("%s is a LoRA adapter on %s: published as an adapter", target.uri, target.tags["kfnlp.adapter_base"])
    version = registry.client.get_model_version(target.model, str(target.version))
    metrics = dict(registry.client.get_run(version.run_id).data.metrics) if version.run_id else {}
    local = Path(registry.download(target.uri))
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="kfnlp-publish-") as tmp:
        folder = Path(tmp)
        for path in sorted(local.rglob("*")):
            rel = path.relative_to(local)
            if path.is_file() and rel.as_posix() not in SKIPPED and rel.as_posix() != "README.md":
                (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, folder / rel)
        existing = local / "README.md"
        registered = existing.read_text(encoding="utf-8") if existing.is_file() else ""
        (folder / "README.md").write_text(card(target, registered, metrics), encoding="utf-8")
        (folder / "kfnlp-registry.json").write_text(
            json.dumps(
                {"model": target.model, "version": target.version, "tags": target.tags, "metrics": metrics}, indent=2
            ),
            encoding="utf-8",
        )
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=str(folder),
                commit_message=f"{target.model} v{target.version} (kfnlp registry {target.registry})",
            )
            tag = revision(target)
            api.create_tag(repo_id, tag=tag, revision=commit.oid, exist_ok=True)
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise _hub_error(exc, repo_id, token) from None
    log.info("published %s to %s (revision %s)", target.uri, repo_id, tag)
    return {
        "model": target.model,
        "version": target.version,
        "repo_id": repo_id,
        "url": str(url),
        "revision": tag,
        "commit": commit.oid,
        "private": private,
        "files": files,
    }
