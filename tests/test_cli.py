"""The console script's own surface: --version, and every --help gives each option's default."""

import argparse

import pytest

from adl_stream import __version__
from adl_stream.cli import _HelpFormatter, build_parser


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"adl-stream {__version__}"


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_option_of_every_help_says_its_default(name):
    command = subcommands()[name]
    formatter = _HelpFormatter(name)
    for action in command._actions:
        if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)) or action.required:
            continue  # a switch is off unless given
        if any(action in group._group_actions for group in command._mutually_exclusive_groups if group.required):
            continue  # one of them must be given
        shown = formatter._get_help_string(action) % {"default": action.default}
        assert "default" in shown, f"adl-stream {name} {action.option_strings}: {shown!r}"
    assert "(default: " in command.format_help()


def test_leverages_flag_makes_the_scenario_and_refuses_what_is_no_leverage(capsys):
    from adl_stream.cli import _scenario

    args = build_parser().parse_args(["simulate", "--leverages", "2,2,5"])
    assert _scenario(args).leverages == (2, 2, 5)
    assert _scenario(build_parser().parse_args(["simulate"])).leverages == (2, 3, 3, 5, 5, 5, 10, 10, 10, 10, 20, 20, 25, 50)
    for bad in ("2,x", "0,3", ""):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["simulate", "--leverages", bad])
        assert "--leverages" in capsys.readouterr().err
