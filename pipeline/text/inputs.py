"""Resolving a stage's ``input`` list into local files and hub dataset names.

``resolve_inputs`` expands globs (``data/*.jsonl.gz``, ``**`` recursive; matches sorted and
de-duplicated) and directories (every supported file inside, sorted), keeps hub dataset names
(``hf://wikitext`` or a bare id such as ``Salesforce/wikitext`` that is not a local path) and
checks every local file up front: missing, empty or of an unsupported type is one error naming it.
Reading the resolved inputs is :mod:`pipeline.text.corpus`'s job.
"""

from __future__ import annotations

import glob
import os
import re

from pipeline.errors import PipelineError

SUFFIXES = (".txt", ".jsonl", ".csv", ".parquet")
HUB_PREFIX = "hf://"
_GLOB_CHARS = re.compile(r"[*?\[]")
# a hub id: "name" or "owner/name", letters, digits, "-", "_", "."
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_name(source: str) -> bool:
    """True for ``hf://name`` and for a bare ``name``/``owner/name`` that is not a local path."""
    if source.startswith(HUB_PREFIX):
        return True
    if os.path.exists(source) or _GLOB_CHARS.search(source):
        return False
    return bool(_HUB_ID.match(source)) and format_of(source) is None


def format_of(path: str) -> str | None:
    """``'a/b.jsonl.gz'`` -> ``'.jsonl'``; None for an unsupported suffix."""
    name = path[:-3] if path.endswith(".gz") else path
    suffix = os.path.splitext(name)[1].lower()
    return suffix if suffix in SUFFIXES else None


def _files_in_directory(directory: str) -> list[str]:
    found = [
        os.path.join(root, name)
        for root, _, names in os.walk(directory)
        for name in names
        if format_of(name) is not None and not name.startswith(".")
    ]
    if not found:
        raise PipelineError(f"input directory {directory} contains no {'/'.join(SUFFIXES)}[.gz] files")
    return sorted(found)


def _expand(pattern: str) -> list[str]:
    if is_hub_name(pattern):
        return [pattern]
    if _GLOB_CHARS.search(pattern):
        matches = sorted(m for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))
        if not matches:
            raise PipelineError(f"input pattern {pattern!r} matches no files")
        return matches
    if os.path.isdir(pattern):
        return _files_in_directory(pattern)
    if not os.path.exists(pattern):
        raise PipelineError(f"input file not found: {pattern}")
    return [pattern]


def resolve_inputs(inputs: list[str]) -> list[str]:
    """Expand globs and directories (sorted, de-duplicated), keep hub names; check local files.

    Raises PipelineError for an empty ``inputs`` list, a pattern that matches nothing, a missing
    file, an unsupported suffix or an empty (0-byte) file."""
    if not inputs:
        raise PipelineError("input: no input files given")
    resolved: list[str] = []
    seen: set[str] = set()
    for pattern in inputs:
        for source in _expand(pattern):
            key = source if is_hub_name(source) else os.path.realpath(source)
            if key in seen:
                continue
            seen.add(key)
            if not is_hub_name(source):
                _check_local_file(source)
            resolved.append(source)
    return resolved


def _check_local_file(path: str) -> None:
    if format_of(path) is None:
        raise unsupported_input(path)
    if os.path.getsize(path) == 0:
        raise PipelineError(f"input file is empty: {path}")


def unsupported_input(path: str) -> PipelineError:
    return PipelineError(
        f"unsupported input file type: {path} (expected {', '.join(SUFFIXES)}, optionally + .gz)"
    )
