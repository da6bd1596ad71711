"""The README's rule for flags and the environment: every flag has exactly one variable, shown by --help, and a
client's flags (`rerankd bench`) never read a server's variable."""

from __future__ import annotations

import click
from click.testing import CliRunner

from rerankd.cli.main import cli


def _commands() -> dict[str, click.Command]:
    assert isinstance(cli, click.Group)
    return dict(cli.commands)


def _variables(command: click.Command) -> dict[str, str]:
    found = {}
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden and "--help" not in param.opts:
            assert isinstance(param.envvar, str), f"{command.name} {param.opts}: one variable, got {param.envvar!r}"
            found[max(param.opts, key=len)] = param.envvar
    return found


def test_every_flag_has_one_variable_and_help_shows_it() -> None:
    for name, command in _commands().items():
        text = CliRunner().invoke(cli, [name, "--help"], terminal_width=400).output
        for flag, variable in _variables(command).items():
            assert variable in text, f"rerankd {name} --help does not show {variable} for {flag}"


def test_bench_flags_read_their_own_variables_never_a_servers() -> None:
    commands = _commands()
    bench = _variables(commands["bench"])
    assert bench["--api-key"] == "RERANKD_BENCH_API_KEY" and bench["--seed"] == "RERANKD_BENCH_SEED"
    assert all(v.startswith("RERANKD_BENCH_") for v in bench.values()), bench
    others = {v for name, c in commands.items() if name != "bench" for v in _variables(c).values()}
    assert not set(bench.values()) & others
