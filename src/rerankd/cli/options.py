"""Click options that follow rerankd's one rule for flags and the environment.

Every flag `--some-flag` can also be set as `RERANKD_SOME_FLAG`; a repeatable
flag takes a comma-separated list there. Flags given on the command line win.
Options for `Settings` fields are generated from the field metadata, so the
help text lives in one place, and their environment values go through
`rerankd.settings.parse_env_value`, the parser that the server processes started
without the CLI (workers, gunicorn, Ray Serve replicas) use as well.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click

from rerankd.settings import Settings, env_list, env_name, parse_env_value


class EnvOption(click.Option):
    """A click option whose environment variable is always `RERANKD_<NAME>`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        long_flags = [o for o in self.opts if o.startswith("--")]
        if long_flags and not self.envvar:
            self.envvar = env_name(max(long_flags, key=len))
        self.show_envvar = True

    def value_from_envvar(self, ctx: click.Context) -> Any:
        raw = self.resolve_envvar_value(ctx)  # None when unset or empty
        return None if raw is None else self.parse_env(raw)

    def parse_env(self, raw: str) -> Any:
        """The generic rule: a repeatable option takes a comma-separated list, any other the text for its type."""
        return env_list(raw) if self.multiple else raw


class SettingOption(EnvOption):
    """The option of a `Settings` field (its name is the field's).

    Its environment value is read by `rerankd.settings.parse_env_value`, as in the `serve --workers`
    processes, gunicorn and Ray Serve replicas, so the CLI and those can't read a variable differently.
    """

    def parse_env(self, raw: str) -> Any:
        return parse_env_value(typing.cast(str, self.name), raw)


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
            wrapper = click.option(
                "--" + name.replace("_", "-"),
                name,
                cls=SettingOption,
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
    "model_kind",
    "instruction",
    "no_prefix_reuse",
    "calibration",
    "truncation",
    "chunk_overlap",
    "chunk_aggregate",
    "max_chunks_per_doc",
)
