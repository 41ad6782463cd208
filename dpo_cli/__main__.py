"""Allows `python -m dpo_cli` and `accelerate launch -m dpo_cli train ...`."""

from dpo_cli.cli.main import main

if __name__ == "__main__":
    main()
