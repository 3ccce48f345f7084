"""``python -m pipeline`` is ``pipeline``; so ``accelerate launch -m pipeline pretrain ...`` works."""

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
