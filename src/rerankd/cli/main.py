"""Entry point of the `rerankd` command: the group, logging, and error reporting."""

from __future__ import annotations

from typing import Any

import click

from rerankd import __version__
from rerankd.cli.bench import bench
from rerankd.cli.calibrate import calibrate
from rerankd.cli.demo import demo
from rerankd.cli.eval import eval_command
from rerankd.cli.models import download, export, make_test_model
from rerankd.cli.options import option
from rerankd.cli.score import rerank_file, score
from rerankd.cli.serve import serve
from rerankd.errors import RerankdError
from rerankd.logs import configure_logging


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RerankdError as exc:
            raise click.ClickException(exc.message) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="rerankd")
@option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="Log level of messages on stderr.",
)
def cli(log_level: str) -> None:
    """Score and rerank documents with a cross-encoder (default: BAAI/bge-reranker-v2-m3).

    Every flag can also be set in the environment as RERANKD_<FLAG_IN_UPPER_SNAKE>
    (for example --max-batch-tokens as RERANKD_MAX_BATCH_TOKENS); a repeatable flag
    takes a comma-separated list there. Flags on the command line win. `bench`, a
    client, reads RERANKD_BENCH_<FLAG> instead, never a server's variable.
    """
    configure_logging(log_level)


cli.add_command(score)
cli.add_command(rerank_file)
cli.add_command(demo)
cli.add_command(serve)
cli.add_command(download)
cli.add_command(make_test_model)
cli.add_command(export)
cli.add_command(eval_command)
cli.add_command(calibrate)
cli.add_command(bench)


def main() -> None:
    cli(prog_name="rerankd")


if __name__ == "__main__":
    main()
