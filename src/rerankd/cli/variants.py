"""`--variant NAME=FLAGS`: a named change to the model settings, in the flags of `rerankd score`.

The flags are parsed by `rerankd score`'s own setting options, so any flag that command gains (a new
precision, `--truncation chunk`) works in a variant without a change here. A variant changes only the
flags it names; everything else comes from the command line around it.
"""

from __future__ import annotations

import re
import shlex

import click
from click.core import ParameterSource

from rerankd.cli.options import SettingOption
from rerankd.cli.score import score
from rerankd.settings import Settings

# The settings a variant may change, and eval and calibrate take: those of `rerankd score`.
SCORE_SETTINGS = tuple(p.name for p in score.params if isinstance(p, SettingOption) and p.name)
_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")


def _flags_parser() -> click.Command:
    return click.Command("variant", params=[p for p in score.params if isinstance(p, SettingOption)],
                         add_help_option=False)


def parse_variant(spec: str, base: Settings) -> tuple[str, Settings, str]:
    """`NAME=FLAGS` -> (name, `base` with the flags' changes, flags).

    Raises:
        click.BadParameter: for a bad name, unparsable flags, or a flag `rerankd score` does not take.
    """
    name, sep, flags = spec.partition("=")
    if not sep or not _NAME.fullmatch(name):
        raise click.BadParameter(
            f"{spec!r}: expected NAME=FLAGS, a name of letters, digits, '.', '_' or '-', for example "
            "int8=\"--dtype int8\"", param_hint="--variant"
        )
    try:
        args = shlex.split(flags)
        ctx = _flags_parser().make_context(f"--variant {name}", args)
    except (ValueError, click.ClickException) as exc:
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        raise click.BadParameter(f"{name}: {message} (a variant takes the setting flags of `rerankd score`)",
                                 param_hint="--variant") from None
    changes = {
        key: tuple(value) if isinstance(value, (list, tuple)) else value
        for key, value in ctx.params.items()
        if ctx.get_parameter_source(key) is ParameterSource.COMMANDLINE
    }
    return name, base.with_changes(**changes), flags

