"""The ``ledgerbridge`` command line: a thin layer over the service functions.

Each command group lives in its own module and is listed in ``jobs.cli.commands``; ``main``
registers them the first time it needs them (``jobs.cli.group.MainGroup``), so importing this
package and ``ledgerbridge --version`` import click alone. Bad input of any kind ends as one
line on stderr and exit code 2 (see ``jobs.cli.group``).
"""
from __future__ import annotations

import click

from jobs.cli.group import MainGroup

#: The log formats of ``jobs.logs.FORMATS``, spelt here so that ``--version`` does not import
#: the logging set-up (a unit test keeps the two equal).
LOG_FORMATS = ("text", "json")


@click.group(cls=MainGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ledgerbridge", prog_name="ledgerbridge",
                      message="%(prog)s %(version)s")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              envvar="LEDGERBRIDGE_CONFIG", help="TOML config file (default: built-in defaults).")
@click.option("--database-url", envvar="LEDGERBRIDGE_DATABASE_URL",
              help="Database URL (default: sqlite:///ledgerbridge.db in this directory).")
@click.option("-v", "--verbose", count=True,
              help="More log output (-v info, -vv debug and the libraries' own lines).")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
              envvar="LEDGERBRIDGE_LOG_FORMAT", help="Log lines on stderr: text, or one JSON "
              "object per line (time, level, logger, message, run_id, connection, ...).")
@click.option("--wide", is_flag=True, help="Tables show every value on one line, as wide as "
              "it takes (default: cells wrap to the terminal's width).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, database_url: str | None,
         verbose: int, log_format: str, wide: bool) -> None:
    """ledgerbridge: billing and credit control beside Salesforce or Dynamics 365."""
    from jobs.cli.common import AppContext

    ctx.obj = AppContext(config_path=config_path, database_url=database_url, verbosity=verbose,
                         log_format=log_format, wide=wide)
    ctx.call_on_close(ctx.obj.close)
