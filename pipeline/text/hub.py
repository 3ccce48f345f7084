"""Hugging Face hub datasets: the one place that loads them, falls back to a local mirror, and
explains why it failed.

Used by the corpus readers (tokenizer, shard), the fine-tuning table readers and so by the
``pipeline evaluate`` suites, for every input that is not a local file::

    data, local = load_hub_or_local("nyu-mll/glue", "sst2", "train", streaming=False, source=..., local_hint=...)
    # data: the hub dataset, or None when the hub was unreachable and ``local`` (a LocalCopy) stands in

The hub stays the default.  When it cannot be reached (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``
set, or a connection error) and the dataset is in :data:`MIRROR`, the local copy is used instead and
one warning line says which file replaces which hub split (and how the copy differs, e.g. the local
WikiText-2 is the tokenized variant, not the raw one).  The mirror root is ``$PIPELINE_DATA`` if
set, else ``shared/data`` beside the checkout (the folder above the repository root), else
``../shared/data`` from the working directory - the layout the tests and CI use.  Without hub and
mirror the error says both and which key to point at local files.

Once the hub proved unreachable, this process does not ask it again (each attempt costs ~25 s of
retries) and takes every later split from the mirror too, so the stages of one ``pipeline run``
read the same copy; :func:`forget_unreachable_hub` resets that (tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import console
from pipeline.errors import PipelineError

__all__ = [
    "MIRROR",
    "LocalCopy",
    "find_local_copy",
    "forget_unreachable_hub",
    "hub_offline",
    "load_hub_or_local",
    "mirror_roots",
]

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout, for an editable install
_UNREACHABLE: dict[str, str] = {}  # "reason" -> why the hub was unreachable in this process


@dataclass(frozen=True)
class LocalCopy:
    """A file of the local mirror standing in for one split of a hub dataset.

    ``columns`` maps each hub column to the local file's column (a name, or a 0-based index for a
    header-less file); ``values`` maps local values of a hub column to the hub's (RTE's string
    labels -> the hub's class ids)."""

    path: Path
    header: bool = True
    columns: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    note: str = ""


def _glue(file: str, columns: dict[str, str], *, header: bool = True, values=None) -> LocalCopy:
    return LocalCopy(Path(file), header, columns, values or {})


_WIKITEXT_NOTE = "; it is WikiText-2's tokenized variant (wiki.*.tokens: '<unk>', ' @-@ '), not the raw text"
_TEST = {"idx": "index"}  # GLUE test files: an index column, no labels
_RTE_LABELS = {"label": {"entailment": "0", "not_entailment": "1"}}  # the hub's ClassLabel ids
# (hub name, config, split) -> the file under the mirror root and how to read it as the hub split
MIRROR: dict[tuple[str, str, str], LocalCopy] = {
    **{
        ("Salesforce/wikitext", "wikitext-2-raw-v1", split): LocalCopy(
            Path(f"wikitext-2/{file}"), note=_WIKITEXT_NOTE
        )
        for split, file in (("train", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt"))
    },
    ("nyu-mll/glue", "sst2", "train"): _glue("sst2/train.tsv", {"sentence": "sentence", "label": "label"}),
    ("nyu-mll/glue", "sst2", "validation"): _glue("sst2/dev.tsv", {"sentence": "sentence", "label": "label"}),
    ("nyu-mll/glue", "sst2", "test"): _glue("sst2/test.tsv", {**_TEST, "sentence": "sentence"}),
    ("nyu-mll/glue", "cola", "train"): _glue("glue/CoLA/train.tsv", {"sentence": "3", "label": "1"}, header=False),
    ("nyu-mll/glue", "cola", "validation"): _glue("glue/CoLA/dev.tsv", {"sentence": "3", "label": "1"}, header=False),
    ("nyu-mll/glue", "cola", "test"): _glue("glue/CoLA/test.tsv", {**_TEST, "sentence": "sentence"}),
    **{
        ("nyu-mll/glue", "mrpc", split): _glue(
            f"glue/MRPC/{file}", {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}
        )
        for split, file in (("train", "train.tsv"), ("validation", "dev.tsv"))
    },
    ("nyu-mll/glue", "mrpc", "test"): _glue(
        "glue/MRPC/test.tsv", {**_TEST, "sentence1": "#1 String", "sentence2": "#2 String"}
    ),
    **{
        ("nyu-mll/glue", "rte", split): _glue(
            f"glue/RTE/{file}",
            {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label", "idx": "index"},
            values=_RTE_LABELS,
        )
        for split, file in (("train", "train.tsv"), ("validation", "dev.tsv"))
    },
    ("nyu-mll/glue", "rte", "test"): _glue(
        "glue/RTE/test.tsv", {**_TEST, "sentence1": "sentence1", "sentence2": "sentence2"}
    ),
}  # fmt: skip
ALIASES = {"wikitext": "Salesforce/wikitext", "glue": "nyu-mll/glue"}  # the datasets' older hub names


def hub_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(
        os.environ.get(k, "").strip().lower() in truthy for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def mirror_roots() -> list[Path]:
    """Where local copies are looked for, in order: ``$PIPELINE_DATA`` alone if set, else
    ``shared/data`` beside the checkout, else ``../shared/data`` from the working directory."""
    if os.environ.get("PIPELINE_DATA"):
        return [Path(os.environ["PIPELINE_DATA"])]
    return [REPO_ROOT.parent / "shared" / "data", Path("..") / "shared" / "data"]


def find_local_copy(name: str, config: str | None, split: str) -> LocalCopy | None:
    """The mirror's file for hub split ``(name, config, split)`` (path made absolute), or None."""
    entry = MIRROR.get((ALIASES.get(name, name), config or "", split))
    if entry is None:
        return None
    for root in mirror_roots():
        path = root / entry.path
        if path.is_file():
            return LocalCopy(path.resolve(), entry.header, entry.columns, entry.values, entry.note)
    return None


def forget_unreachable_hub() -> None:
    """Ask the hub again next time (this process remembers that it was unreachable)."""
    _UNREACHABLE.clear()


def _unreachable(error: BaseException) -> bool:
    """A connection problem (or offline mode), as opposed to e.g. a wrong dataset name."""
    chain, seen = error, set()
    while chain is not None and id(chain) not in seen:
        seen.add(id(chain))
        names = {t.__name__ for t in type(chain).__mro__}
        if names & {
            "ConnectionError",
            "TimeoutError",
            "ConnectError",
            "ConnectTimeout",
            "OfflineModeIsEnabled",
        }:
            return True
        chain = chain.__cause__ or chain.__context__
    return hub_offline()


def _use_local(name: str, config: str | None, split: str, reason: str) -> LocalCopy | None:
    local = find_local_copy(name, config, split)
    if local is not None:
        console.warn(
            f"the hub is unreachable ({reason}): reading hub dataset {name} ({config}, split {split}) "
            f"from the local copy {local.path}{local.note}"
        )
    return local


def load_hub_or_local(
    name: str, config: str | None, split: str, *, streaming: bool, source: str, local_hint: str
):
    """``(datasets.load_dataset(name, config, split=split), None)``, or ``(None, LocalCopy)`` when the
    hub is unreachable and the mirror has the split; anything else -> one clear PipelineError.

    ``source`` is what the user wrote, ``local_hint`` how to use local files instead."""
    if _UNREACHABLE:
        local = _use_local(name, config, split, f"found earlier in this process: {_UNREACHABLE['reason']}")
        if local is not None:
            return None, local
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming), None
    except Exception as e:  # ConnectionError, DatasetNotFoundError, ValueError for a bad split...
        cause = f"{type(e).__name__}: {e}"
        if not _unreachable(e):
            reason = f"loading it failed ({cause}); the name, config or split may be wrong"
            raise _hub_error(source, config, split, reason, local_hint) from None
        offline = "offline mode: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set"
        _UNREACHABLE["reason"] = offline if hub_offline() else cause
        local = _use_local(name, config, split, _UNREACHABLE["reason"])
        if local is not None:
            return None, local
        why = f"{offline}; {cause}" if hub_offline() else cause
        roots = " or ".join(str(r) for r in mirror_roots())
        reason = f"the hub is unreachable ({why}) and no local copy was found (looked in {roots})"
        raise _hub_error(source, config, split, reason, local_hint) from None


def _hub_error(source: str, config: str | None, split: str, reason: str, local_hint: str) -> PipelineError:
    return PipelineError(
        f"{source!r} is not a local file, so it was taken as a Hugging Face hub dataset "
        f"(config {config!r}, split {split!r}), but {reason}. {local_hint}"
    )
