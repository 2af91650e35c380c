"""``python -m eval.query``."""

from eval.query.run import cli

if __name__ == "__main__":
    cli()
