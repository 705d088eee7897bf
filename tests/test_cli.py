"""The command line: every command in the one table, each with a description of its own."""

from __future__ import annotations

import pytest

from ndmha.__main__ import COMMANDS, build_parser, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_says_what_it_does(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: ndmha {name}")
    # the description below the usage is the command's own, not empty, not indented
    description = text.split("\n\n")[1]
    assert description.strip() and not description.startswith(" ")


def test_no_command_lists_them_all(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 0
    listed = capsys.readouterr().out
    for name, (_, summary, _) in COMMANDS.items():
        assert name in listed and summary.split()[0] in listed
