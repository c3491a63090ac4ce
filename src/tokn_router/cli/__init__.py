"""The ``tokn-router`` command line: thin cyclopts commands over the library.

Every command module registers itself on :data:`app`; :func:`main` turns every
:class:`~tokn_router.errors.ToknError` into one line on stderr and its exit code
(2 for usage/config errors, 1 for runtime failures), never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

from cyclopts import App, CycloptsError

from tokn_router._version import __version__
from tokn_router.cli import _context
from tokn_router.errors import ToknError


def _format_cyclopts_error(err: CycloptsError) -> Any:
    msg = " ".join(str(err).split())
    return f"tokn-router: error: {msg}"


app = App(
    name="tokn-router",
    help=(
        "Turn GitHub Copilot and Z.ai coding-plan accounts into a local "
        "OpenAI-compatible API.\n\nGlobal option: --config PATH (before or after the command)."
    ),
    version=f"tokn-router {__version__}",
    version_flags=["--version", "-V"],
    backend="trio",
    error_formatter=_format_cyclopts_error,
    help_formatter="plain",
    suppress_keyboard_interrupt=False,  # main() reports Ctrl-C as "interrupted", exit 130
)

# Command modules register themselves on import. Later features add theirs here.
from tokn_router.cli import accounts as _accounts  # noqa: E402,F401
from tokn_router.cli import config_cmd as _config_cmd  # noqa: E402,F401
from tokn_router.cli import keys_cmd as _keys_cmd  # noqa: E402,F401
from tokn_router.cli import login as _login  # noqa: E402,F401
from tokn_router.cli import proxy_cmd as _proxy_cmd  # noqa: E402,F401
from tokn_router.cli import serve as _serve  # noqa: E402,F401
from tokn_router.cli import service_cmd as _service_cmd  # noqa: E402,F401
from tokn_router.cli import usage_cmd as _usage_cmd  # noqa: E402,F401


def _fail(message: str, code: int) -> int:
    print(f"tokn-router: error: {message}", file=sys.stderr)
    return code


def _first_tokn_error(eg: BaseExceptionGroup[BaseException]) -> ToknError | None:
    for exc in eg.exceptions:
        if isinstance(exc, ToknError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_tokn_error(exc)
            if found is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _context.take_global_options(args)
        result = app(args, exit_on_error=False, print_error=False, result_action="return_value")
    except ToknError as e:
        return _fail(str(e), e.exit_code)
    except CycloptsError as e:
        # one line, whatever the terminal width (cyclopts' own panel wraps)
        return _fail(" ".join(str(e).split()) or type(e).__name__, 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except BaseExceptionGroup as eg:  # errors raised inside trio nurseries arrive grouped
        err = _first_tokn_error(eg)
        if err is None:
            raise
        return _fail(str(err), err.exit_code)
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return 0


def entrypoint() -> None:
    sys.exit(main())
