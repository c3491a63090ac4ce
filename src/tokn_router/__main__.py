"""``python -m tokn_router``: the same command line as ``tokn-router``."""

from tokn_router.cli import entrypoint

if __name__ == "__main__":
    entrypoint()
