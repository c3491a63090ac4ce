"""``tokn-router completion bash|zsh|fish``: shell completion from cyclopts.

The script is generated from the command tree, so new commands and flags
complete without editing it; dynamic parts call back into ``tokn-router``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import Parameter

from tokn_router.cli._app import app
from tokn_router.cli._params import Flag
from tokn_router.errors import ToknError

Shell = Literal["bash", "zsh", "fish"]


@app.command
def completion(
    shell: Shell,
    /,
    *,
    install: Flag = False,
    output: Annotated[Path | None, Parameter(metavar="PATH")] = None,
) -> None:
    """Print (or install) the shell completion script.

    bash: `source <(tokn-router completion bash)` in ~/.bashrc.
    zsh: `tokn-router completion zsh > ~/.zsh/completions/_tokn-router` (a
    folder on $fpath). fish: `tokn-router completion fish >
    ~/.config/fish/completions/tokn-router.fish`. --install writes it to the
    shell's usual place and, for bash and zsh, adds the line that loads it to
    ~/.bashrc / ~/.zshrc.

    Parameters
    ----------
    shell
        bash, zsh or fish.
    install
        Write the script to the shell's completion folder instead of stdout.
    output
        With --install: write it here instead.
    """
    if not install:
        if output is not None:
            raise ToknError("--output needs --install (or redirect stdout)")
        sys.stdout.write(app.generate_completion(shell=shell))
        return
    try:
        path = app.install_completion(shell=shell, output=output)
    except OSError as e:
        raise ToknError(f"cannot install the {shell} completion: {e.strerror or e}") from None
    print(f"Installed the {shell} completion in {path}; open a new shell to use it.")
