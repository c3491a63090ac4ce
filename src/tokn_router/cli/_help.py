"""Help output: plain text, wrapped to the terminal, continuation lines indented.

cyclopts' plain formatter prints each entry as one long line and keeps the
docstring's own line breaks, so a wrapped description starts again at column 0.
This one re-flows every paragraph and hangs continuation lines under the text.
"""

from __future__ import annotations

import re
import textwrap
from typing import TYPE_CHECKING, Any

from cyclopts.help.formatters.plain import PlainFormatter, _to_plain_text

if TYPE_CHECKING:
    from cyclopts.help import HelpEntry, HelpPanel
    from rich.console import Console, ConsoleOptions

_INDENT = "  "
_HANG = "      "  # continuation lines of an entry start here


def _width(console: Console) -> int:
    # very wide terminals make paragraphs hard to read; very narrow ones unusable
    return max(40, min(console.width, 100))


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


class HelpFormatter(PlainFormatter):
    def _print(self, console: Console, text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    def __call__(self, console: Console, options: ConsoleOptions, panel: HelpPanel) -> None:
        if not panel.entries:
            return
        if panel.title:
            self._print(console, f"{panel.title}:")
        for entry in panel.entries:
            label = self._label(entry, panel.format)
            if label:
                self._entry(console, label, self._description(entry, console, panel.format))
        console.print()

    def _label(self, entry: HelpEntry, kind: str) -> str:
        if kind == "parameter":
            return ", ".join(entry.display_labels_with_metavar)
        names = list(entry.positive_names) + list(entry.positive_shorts)
        return ", ".join(names)

    def _description(self, entry: HelpEntry, console: Console, kind: str) -> str:
        parts = [" ".join(_to_plain_text(entry.description, console).split())]
        if kind == "parameter":
            if entry.choices:
                parts.append(f"[choices: {', '.join(entry.choices)}]")
            if entry.env_var:
                parts.append(f"[env var: {', '.join(entry.env_var)}]")
            # a flag is off unless given: "[default: False]" says nothing
            if entry.default is not None and str(entry.default) != "False":
                parts.append(f"[default: {entry.default}]")
            if entry.required:
                parts.append("[required]")
        return " ".join(p for p in parts if p)

    def _entry(self, console: Console, label: str, desc: str) -> None:
        text = f"{label}: {desc}" if desc else label
        self._print(
            console,
            textwrap.fill(
                text,
                _width(console),
                initial_indent=_INDENT,
                subsequent_indent=_HANG,
                break_on_hyphens=False,
                break_long_words=False,
            ),
        )

    def render_description(
        self, console: Console, options: ConsoleOptions, description: Any
    ) -> None:
        text = _to_plain_text(description, console) if description else ""
        paras = _paragraphs(text)
        if not paras:
            return
        width = _width(console)
        for p in paras:
            self._print(
                console,
                textwrap.fill(p, width, break_on_hyphens=False, break_long_words=False),
            )
            console.print()
