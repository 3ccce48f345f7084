"""Command line: ``pipeline <stage> --config FILE.yaml [key.sub=value ...]``.

``pipeline <stage> --help`` lists every config key of that stage with its type, default and doc.
Works the same under ``accelerate launch [launch flags] -m pipeline <stage> ...``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap

from pipeline import console
from pipeline.config import describe, load_config
from pipeline.errors import PipelineError
from pipeline.stages import STAGES


def stage_module(name: str):
    return importlib.import_module(STAGES[name])


def keys_help(config_cls: type) -> str:
    """The ``--help`` table: one block per key."""
    lines = ["config keys (set in the YAML file or as key.sub=value overrides):", ""]
    for key, type_name, default, doc in describe(config_cls):
        lines.append(f"  {key}  ({type_name}, default {default})")
        for chunk in textwrap.wrap(doc, 88) or [""]:
            lines.append(f"      {chunk}")
    return "\n".join(lines)


def build_parser(stage: str | None) -> argparse.ArgumentParser:
    if stage is None:
        parser = argparse.ArgumentParser(
            prog="pipeline",
            description="Raw text to a fine-tuned encoder. Stages: " + ", ".join(STAGES),
            epilog="Run `pipeline <stage> --help` for the config keys of a stage.",
        )
        parser.add_argument("stage", choices=list(STAGES))
        return parser
    module = stage_module(stage)
    parser = argparse.ArgumentParser(
        prog=f"pipeline {stage}",
        description=(module.__doc__ or "").strip().split("\n\n")[0],
        epilog=keys_help(module.Config),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", "-c", help="YAML config file (optional if every required key is overridden)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="config overrides; win over the file"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STAGES:
        build_parser(None).parse_args(argv[:1] or ["--help"])
        return 2
    stage, rest = argv[0], argv[1:]
    console.show_warnings_plainly()
    args = build_parser(stage).parse_args(rest)
    module = stage_module(stage)
    try:
        cfg = load_config(module.Config, args.config, args.overrides)
        result = module.run(cfg)
    except PipelineError as e:
        console.error(str(e))
        return 2
    except KeyboardInterrupt:
        console.error("interrupted")
        return 130
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
