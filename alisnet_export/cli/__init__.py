"""The ``alisnet-export`` command line (click). Thin: parse, call the library, print.

Each subcommand lives in its own module of this package; heavy libraries (torch, exporters) are
imported inside the command bodies so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
import warnings
from typing import Optional

import click

from .. import __version__
from ..allocator import keep_freed_memory
from ..errors import EXIT_CODES_HELP, EXIT_INTERNAL, AlisnetError
from ._common import wants_json

__all__ = ["cli", "main"]

_HELP = f"""Turn a trained ALiSNet checkpoint into mobile artifacts and prove they still match the float model.

\b
Every command takes an optional CKPT (default: the embedded demo checkpoint), e.g.
  alisnet-export inspect                     # what is in the demo checkpoint
  alisnet-export predict --image photo.jpg   # float-model mask + overlay PNGs

\b
{EXIT_CODES_HELP}
"""


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:  # keep the order commands were added in
        return list(self.commands)


@click.group(cls=_Group, help=_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="alisnet-export")
def cli() -> None:
    pass


#: one module per command group, in the order ``--help`` lists them; each exposes ``COMMANDS``
_COMMAND_MODULES = ("inspect_cmd", "predict_cmd", "export_cmd", "onnx_cmd", "bundle_cmd", "qat_cmd", "parity_cmd", "quant_report_cmd", "eval_cmd",
                    "train_cmd", "demo_data_cmd", "bench_cmd")


def _register() -> None:
    for name in _COMMAND_MODULES:
        module = importlib.import_module(f".{name}", __name__)
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def quiet_library_warnings() -> None:
    """torch warns on every call that TorchScript, eager quantization and the lite interpreter are
    deprecated; the tool uses them on purpose (docs/design.md section 3). ALISNET_EXPORT_SHOW_WARNINGS=1 shows them."""
    if os.environ.get("ALISNET_EXPORT_SHOW_WARNINGS"):
        return
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for pattern in ("TorchScript type system", "must run observer", "quantize_per_", "Lite Interpreter",
                    "is deprecated", "TypedStorage"):
        warnings.filterwarnings("ignore", message=f".*{pattern}.*")
    # torchao registers an Enum as a pytree constant on import; torch logs (not warns) that this is deprecated
    logging.getLogger("torch.utils._pytree").addFilter(lambda record: "register_constant()" not in record.getMessage())


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: maps :class:`AlisnetError` to its exit code, anything else to 70 with a traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    quiet_library_warnings()
    keep_freed_memory()  # large activations are reused, not page-faulted in again on every forward (allocator.py)
    as_json = wants_json(args)
    try:
        rv = cli.main(args=args, prog_name="alisnet-export", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except AlisnetError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": str(exc), "error_type": type(exc).__name__, "exit_code": exc.exit_code}))
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: say so, with the traceback
        traceback.print_exc()
        if as_json:
            click.echo(json.dumps({"ok": False, "error": f"internal error: {exc!r}", "exit_code": EXIT_INTERNAL}))
        click.secho(
            f"internal error in alisnet-export {__version__}: {exc!r}. Please report it with the traceback above.",
            fg="red", err=True,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)
