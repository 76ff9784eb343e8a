"""Upload a trained model, its card and results to the Hugging Face Hub (dry run by default)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def push_model(
    model_dir: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    dry_run: bool = True,
    extra_files: Sequence[str | Path] | None = None,
    commit_message: str = "Upload model trained with sentence-transformers-hybrid",
) -> str:
    """Upload ``model_dir`` (a saved SentenceTransformer with its README.md card) to ``repo_id``.

    With ``dry_run=True`` (the default) nothing is sent: the function checks the folder (it must load offline as a
    SentenceTransformer and have a model card with a ``model-index`` block) and returns what would be uploaded.
    The token is handed to ``huggingface_hub`` and never printed or logged.

    Example::

        >>> print(push_model("runs/cpu/models/hybrid", "me/e5-small-hybrid"))  # needs an experiment's trained model folder (tests/test_experiment.py::test_push_is_a_dry_run_by_default)  # doctest: +SKIP
        dry run: would upload 14 files (...) to me/e5-small-hybrid
    """
    model_dir = Path(model_dir)
    card = model_dir / "README.md"
    if not (model_dir / "modules.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a saved SentenceTransformer (no modules.json)")
    if not card.is_file() or "model-index" not in card.read_text(encoding="utf-8"):
        raise FileNotFoundError(f"{card}: missing, or without a model-index block (write it with report.write_model_card)")
    extras = [Path(f) for f in extra_files or []]
    missing = [str(f) for f in extras if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"extra files not found: {missing}")
    files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
    total = sum((model_dir / f).stat().st_size for f in files) + sum(f.stat().st_size for f in extras)
    summary = f"{len(files) + len(extras)} files ({total / 1e6:.1f} MB) to {repo_id}"
    if dry_run:
        listing = "\n".join(f"  {f}" for f in files + [f.name for f in extras])
        return f"dry run: would upload {summary} (pass --no-dry-run / dry_run=False to upload)\n{listing}"
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(model_dir), commit_message=commit_message)
    for f in extras:
        api.upload_file(path_or_fileobj=str(f), path_in_repo=f.name, repo_id=repo_id, commit_message=commit_message)
    return f"uploaded {summary}"
