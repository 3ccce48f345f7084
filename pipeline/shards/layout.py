"""Where each sequence of a split lives: :class:`SplitLayout`, read from a manifest of any version.

Used by :class:`pipeline.shards.ShardReader`.  Sequence ``i`` is row ``i % shard_size`` of shard
file ``i // shard_size`` (layout rules in :mod:`pipeline.shards.format`), so a layout is a handful
of numbers whatever the number of files; per-file records (sequences, sha256) are read - from the
index file, or the ``shards`` list of a version 1 manifest - only to check the files::

    layout = SplitLayout.from_manifest(root, manifest, "train")
    shard, row = layout.locate(12345)
    for name, sequences, sha256 in layout.records(): ...
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.io import sha256_file
from pipeline.shards.format import MANIFEST_NAME, shard_file_name

__all__ = ["SplitLayout"]


@dataclass(frozen=True)
class SplitLayout:
    root: Path
    split: str
    num_sequences: int
    shard_size: int  # sequences per file (the last may hold fewer)
    num_shards: int
    index: dict[str, Any] | None  # version 2: {"file", "sha256"} of the index
    # the manifest's own per-shard records: version 1, and version 2 splits of few files
    listed: tuple[dict[str, Any], ...] | None

    @classmethod
    def from_manifest(cls, root: Path, manifest: dict[str, Any], split: str) -> SplitLayout:
        splits = manifest.get("splits") or {}
        if split not in splits:
            raise PipelineError(
                f"shard set {root} has no split {split!r} (available: {', '.join(splits) or 'none'})"
            )
        info = splits[split]
        try:
            layout = (
                cls._version_2(root, split, info) if "index" in info else cls._version_1(root, split, info)
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PipelineError(f"{root / MANIFEST_NAME}: split {split!r} is malformed ({e!r})") from None
        expected = -(-layout.num_sequences // layout.shard_size) if layout.shard_size else 0
        if layout.num_shards != expected or layout.num_sequences < 0:
            raise PipelineError(
                f"{root / MANIFEST_NAME}: split {split!r} lists {layout.num_shards} shard file(s) for "
                f"{layout.num_sequences} sequences of {layout.shard_size} per file"
            )
        return layout

    @classmethod
    def _version_2(cls, root: Path, split: str, info: dict[str, Any]) -> SplitLayout:
        index = {"file": str(info["index"]["file"]), "sha256": str(info["index"]["sha256"])}
        listed = tuple(info["shards"]) if "shards" in info else None
        return cls(
            root,
            split,
            int(info["num_sequences"]),
            int(info["shard_size"]),
            int(info["num_shards"]),
            index,
            listed,
        )

    @classmethod
    def _version_1(cls, root: Path, split: str, info: dict[str, Any]) -> SplitLayout:
        listed = tuple(info["shards"])
        counts = [int(shard["num_sequences"]) for shard in listed]
        size = counts[0] if counts else 0
        names = [shard["file"] for shard in listed]
        if counts[:-1] != [size] * (len(counts) - 1) or names != [
            shard_file_name(split, i) for i in range(len(names))
        ]:
            raise PipelineError(
                f"{root / MANIFEST_NAME}: split {split!r} lists shard files that `pipeline shard` does not "
                "write (uneven sizes or other names); re-run `pipeline shard`"
            )
        return cls(root, split, sum(counts), size, len(counts), None, listed)

    # ------------------------------------------------------------------ where sequences are

    def locate(self, index: int) -> tuple[int, int]:
        """(shard file, row in it) of sequence ``index`` (0 <= index < num_sequences)."""
        return divmod(index, self.shard_size)

    def rows(self, shard: int) -> int:
        return min(self.shard_size, self.num_sequences - shard * self.shard_size)

    def path(self, shard: int) -> Path:
        return self.root / shard_file_name(self.split, shard)

    # ------------------------------------------------------------------ per-file records

    def records(self) -> Iterator[tuple[str, int, str]]:
        """(file name, sequences, sha256) of every shard file, in order, checked against the layout
        (and, where the manifest lists them too, the index's records against the manifest's)."""
        lines = self._index_lines() if self.index is not None else self.listed
        count = 0
        for count, record in enumerate(lines, start=1):
            name, sequences, sha256 = (
                _from_dict(record)
                if isinstance(record, dict)
                else _parse_line(record, self.root / self.index["file"], count)
            )
            shard = count - 1
            if self.index is not None and self.listed is not None:
                if shard >= len(self.listed) or _from_dict(self.listed[shard]) != (name, sequences, sha256):
                    raise PipelineError(
                        f"{self.root}: the record of {name} in {self.index['file']} differs from {MANIFEST_NAME}"
                    )
            if (
                shard >= self.num_shards
                or name != shard_file_name(self.split, shard)
                or sequences != self.rows(shard)
            ):
                raise PipelineError(f"{self.root}: the record of {name} does not match {MANIFEST_NAME}")
            yield name, sequences, sha256
        if count != self.num_shards:
            raise PipelineError(
                f"{self.root}: {count} shard records for {self.num_shards} files of {self.split}"
            )

    def _index_lines(self) -> Iterator[str]:
        path = self.root / self.index["file"]
        if not path.is_file():
            raise PipelineError(f"shard index missing: {path} (listed in {self.root / MANIFEST_NAME})")
        if sha256_file(path) != self.index["sha256"]:
            raise PipelineError(f"shard index {path} is corrupted: sha256 mismatch; re-run `pipeline shard`")
        with open(path, encoding="utf-8") as lines:
            yield from lines


def _from_dict(record: dict[str, Any]) -> tuple[str, int, str]:
    return record["file"], int(record["num_sequences"]), record["sha256"]


def _parse_line(line: str, path: Path, number: int) -> tuple[str, int, str]:
    fields = line.rstrip("\n").split("\t")
    if len(fields) != 3 or not fields[1].isdigit():
        raise PipelineError(f"{path}:{number}: expected 'file<TAB>sequences<TAB>sha256'")
    return fields[0], int(fields[1]), fields[2]
