"""Click options that follow rerankd's one rule for flags and the environment.

Every flag `--some-flag` can also be set as `RERANKD_SOME_FLAG`; a repeatable
flag takes a comma-separated list there. Flags given on the command line win.
Options for `Settings` fields are generated from the field metadata, so the
help text lives in one place.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click

from rerankd.settings import Settings

ENV_PREFIX = "RERANKD_"


def env_name(flag: str) -> str:
    """`--max-batch-tokens` -> `RERANKD_MAX_BATCH_TOKENS`."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


class EnvOption(click.Option):
    """A click option whose environment variable is always `RERANKD_<NAME>`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        long_flags = [o for o in self.opts if o.startswith("--")]
        if long_flags and not self.envvar:
            self.envvar = env_name(max(long_flags, key=len))
        self.show_envvar = True

    def value_from_envvar(self, ctx: click.Context) -> Any:
        raw = self.resolve_envvar_value(ctx)
        if raw is None:
            return None
        if self.multiple:
            return [part.strip() for part in raw.split(",") if part.strip()]
        return raw


def option(*decls: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(*decls, cls=EnvOption, **kwargs)


def _option_kwargs(annotation: Any, choices: tuple[str, ...] | None) -> dict[str, Any]:
    """Click type and kind for a Settings field: bool -> flag, tuple -> repeatable, X | None -> X."""
    if annotation is bool:
        return {"is_flag": True}
    if typing.get_origin(annotation) is tuple:
        return {"multiple": True, "type": click.STRING}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if choices:
        return {"type": click.Choice(choices)}
    return {"type": {int: click.INT, float: click.FLOAT, str: click.STRING}[annotation]}


def settings_from_values(values: dict[str, Any]) -> Settings:
    """`Settings` from parsed option values (click hands repeatable options over as lists or tuples)."""
    return Settings(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()})


def setting_options(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add one option per named `Settings` field; the command receives them as `settings=Settings(...)`."""
    hints = typing.get_type_hints(Settings)
    by_name = {f.name: f for f in fields(Settings)}

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return command(*args, settings=settings_from_values({name: kwargs.pop(name) for name in names}), **kwargs)

        for name in reversed(names):
            f = by_name[name]
            wrapper = option(
                "--" + name.replace("_", "-"),
                name,
                default=f.default,
                show_default=f.default not in (None, ()),
                **_option_kwargs(hints[name], f.metadata.get("choices")),
                metavar=f.metadata.get("metavar"),
                help=f.metadata["help"],
            )(wrapper)
        return wrapper

    return decorate


MODEL_SETTINGS = (
    "model",
    "revision",
    "device",
    "dtype",
    "backend",
    "max_length",
    "query_max_length",
    "max_batch_tokens",
    "max_batch_size",
    "threads",
)
