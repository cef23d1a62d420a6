"""Every option of every subcommand explains itself in ``--help``.

Options made from settings fields (`newswatch.flags.add_flags`) show the
field's docstring, its default and its environment variable; so every field of
every settings section needs a docstring.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from newswatch import config
from newswatch.cli import build_parser


def subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("newswatch",)
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from subcommands(child, (*path, name))


COMMANDS = dict(subcommands(build_parser()))


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_has_help(command):
    parser = COMMANDS[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{command} {name} has no help"
        if "__" in action.dest:  # a settings field
            section, field = action.dest.split("__", 1)
            assert not action.help.startswith("(default"), f"{command} {name}: no description"
            assert "(default: " in action.help
            assert f"env {config.env_name(section, field)})" in action.help
    parser.format_help()  # renders (a stray % in a docstring would raise here)


def test_a_settings_flag_reads_as_description_default_and_variable():
    parser = COMMANDS["newswatch run"]
    (action,) = [a for a in parser._actions if "--poll-interval" in a.option_strings]
    assert action.metavar == "SECONDS"
    assert action.help == (
        "Seconds between polls of one feed. (default: 300; env NEWSWATCH_CONNECTORS_POLL_INTERVAL)"
    )


SECTIONS = sorted({config.Settings, *config.settings_sections()}, key=lambda cls: cls.__name__)


@pytest.mark.parametrize("section", SECTIONS, ids=lambda cls: cls.__name__)
def test_every_settings_field_has_a_docstring(section):
    missing = [name for name in section.model_fields if not config.field_help(section, name)]
    assert missing == [], f"{section.__name__} fields without a docstring: {missing}"
