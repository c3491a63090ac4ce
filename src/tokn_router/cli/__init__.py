"""The ``tokn-router`` command line: thin cyclopts commands over the library.

Every command module registers itself on the app of :mod:`tokn_router.cli._app`;
:func:`main` turns every :class:`~tokn_router.errors.ToknError` into one line on
stderr and its exit code (2 for usage/config errors, 1 for runtime failures),
never a traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from cyclopts import CycloptsError

from tokn_router import redact
from tokn_router.cli import _context

# Command modules register themselves on import. Later features add theirs here.
from tokn_router.cli import accounts as _accounts  # noqa: F401
from tokn_router.cli import completion as _completion  # noqa: F401
from tokn_router.cli import config_cmd as _config_cmd  # noqa: F401
from tokn_router.cli import doctor as _doctor  # noqa: F401
from tokn_router.cli import keys_cmd as _keys_cmd  # noqa: F401
from tokn_router.cli import login as _login  # noqa: F401
from tokn_router.cli import proxy_cmd as _proxy_cmd  # noqa: F401
from tokn_router.cli import serve as _serve  # noqa: F401
from tokn_router.cli import service_cmd as _service_cmd  # noqa: F401
from tokn_router.cli import status as _status  # noqa: F401
from tokn_router.cli import usage_cmd as _usage_cmd  # noqa: F401
from tokn_router.cli._app import app
from tokn_router.errors import ToknError


def _fail(message: str, code: int) -> int:
    print(f"tokn-router: error: {message}", file=sys.stderr)
    return code


def _first(
    eg: BaseExceptionGroup[BaseException], kind: type[BaseException]
) -> BaseException | None:
    for exc in eg.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
    return None


def _first_tokn_error(eg: BaseExceptionGroup[BaseException]) -> ToknError | None:
    found = _first(eg, ToknError)
    return found if isinstance(found, ToknError) else None


def _stdout_gone() -> int:
    """The reader of our stdout went away (``| head``): stop quietly, exit 0.

    Python's final flush would fail again and print "Exception ignored";
    pointing stdout at /dev/null lets the interpreter exit cleanly.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return 0


def _internal_error(exc: BaseException) -> int:
    """A bug, not a user error: one line, the traceback only on request."""
    if os.environ.get("TOKN_ROUTER_TRACEBACK"):
        import traceback

        traceback.print_exception(exc)
    detail = redact.text(" ".join(str(exc).split()))
    name = type(exc).__name__
    print(
        f"tokn-router: internal error: {name}{': ' + detail if detail else ''} "
        "(a bug; TOKN_ROUTER_TRACEBACK=1 shows where)",
        file=sys.stderr,
    )
    return 1


def _console() -> Any:
    """cyclopts' console, except that a closed stdout raises BrokenPipeError.

    rich's default reaction is ``SystemExit(1)``: ``tokn-router --help | head -1``
    would fail although nothing went wrong.
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return _Console()


_HELP_FLAGS = frozenset({"--help", "-h", "--version", "-V"})


def _may_print_help(args: list[str]) -> bool:
    # `serve` prints no rich output unless asked for help; rich.console costs the
    # daemon's start-up ~25 ms (cyclopts makes a default console if it needs one)
    return args[:1] != ["serve"] or any(a in _HELP_FLAGS for a in args)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _context.take_global_options(args)
        if _may_print_help(args):
            app.console = _console()
        result = app(args, exit_on_error=False, print_error=False, result_action="return_value")
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    except ToknError as e:
        return _fail(str(e), e.exit_code)
    except CycloptsError as e:
        # one line, whatever the terminal width (cyclopts' own panel wraps)
        return _fail(" ".join(str(e).split()) or type(e).__name__, 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _stdout_gone()
    except BaseExceptionGroup as eg:  # errors raised inside trio nurseries arrive grouped
        err = _first_tokn_error(eg)
        if err is not None:
            return _fail(str(err), err.exit_code)
        if _first(eg, KeyboardInterrupt) is not None:
            print("interrupted", file=sys.stderr)
            return 130
        if _first(eg, BrokenPipeError) is not None:
            return _stdout_gone()
        return _internal_error(eg)
    except Exception as e:
        return _internal_error(e)
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    return 0


def entrypoint() -> None:
    sys.exit(main())
