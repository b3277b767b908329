"""What every subcommand shares: CKPT/--config/--output/--force/--json, and how results are printed.

Convention: with ``--json`` stdout carries exactly one JSON object (the result, or
``{"ok": false, "error": ..., "exit_code": N}``); human-readable lines and progress bars go to stderr.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import click

from ..formats import human_size

__all__ = [
    "parse_hw",
    "model_options",
    "output_options",
    "json_option",
    "Reporter",
    "resolve_checkpoint",
    "human_size",
    "check_multiple_of_32",
]


def check_multiple_of_32(*options: tuple[str, int]) -> None:
    """Raise :class:`DataError` for the first ``(option, value)`` whose value (an input size) is not a
    multiple of 32, the network's stride."""
    from ..errors import DataError

    for option, value in options:
        if value % 32:
            raise DataError(f"{option} {value} is not a multiple of 32")


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout (for CI); humans' lines go to stderr.")(f)


def model_options(f: Callable) -> Callable:
    """``[CKPT]``, ``--config`` and ``--no-pointrend``: which model to load."""
    f = click.option(
        "--no-pointrend", "no_pointrend", is_flag=True,
        help="Drop the PointRend head (coarse logits upsampled 4x): the paper's Table 3 ablation.",
    )(f)
    f = click.option(
        "--config", "config", metavar="NAME|FILE.json",
        help="Model variant (a shipped name, e.g. alisnet_mnasnet, or a JSON file). "
        "Default: the config stored in the checkpoint, else inferred from its keys.",
    )(f)
    f = click.argument("ckpt", required=False, type=click.Path(path_type=Path, dir_okay=False))(f)
    return f


def output_options(default: str) -> Callable[[Callable], Callable]:
    def deco(f: Callable) -> Callable:
        f = click.option("--force", is_flag=True, help="Overwrite existing outputs.")(f)
        f = click.option(
            "--output", "-o", "output", type=click.Path(path_type=Path), default=default, show_default=True,
            help="Where to write the results.",
        )(f)
        return f

    return deco


def resolve_checkpoint(ckpt: Optional[Path]) -> Path:
    """``ckpt`` or, when omitted, the embedded default demo checkpoint."""
    if ckpt is not None:
        return ckpt
    from ..zoo import default_checkpoint

    return default_checkpoint().path


class Reporter:
    """Prints human lines (stdout, or stderr under --json) and emits the final JSON result."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    @property
    def stream(self):
        return sys.stderr if self.as_json else sys.stdout

    def line(self, text: str = "", **style: Any) -> None:
        click.secho(text, file=self.stream, **style)

    def table(self, rows: list[tuple[str, str]]) -> None:
        width = max((len(k) for k, _ in rows), default=0)
        for k, v in rows:
            self.line(f"  {k.ljust(width)}  {v}")

    def result(self, payload: dict[str, Any]) -> None:
        if self.as_json:
            click.echo(json.dumps(payload, indent=2, sort_keys=False, default=_json_default))


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def wants_json(argv: list[str]) -> bool:
    return "--json" in argv


def pass_reporter(f: Callable) -> Callable:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["reporter"] = Reporter(kwargs.get("as_json", False))
        return f(*args, **kwargs)

    return wrapper


def parse_hw(text: Optional[str], option: str, *, usage_error: bool = False) -> Optional[tuple[int, int]]:
    """``"HxW"`` (``--min-size``/``--max-size``) -> ``(H, W)``, both positive multiples of 32; None stays None.

    Text that is not ``HxW`` raises :class:`DataError` (exit 3), or ``click.BadParameter`` (exit 2) with
    ``usage_error`` (``coreml``'s historical exit code); sizes that are not multiples of 32 raise DataError.
    """
    from ..errors import DataError

    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        message = f"{option} {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 1024x768"
        raise click.BadParameter(message) if usage_error else DataError(message)
    h, w = int(match.group(1)), int(match.group(2))
    bad = [v for v in (h, w) if v % 32 or v < 32]
    if bad:
        raise DataError(f"{option} {text}: {bad[0]} is not a positive multiple of 32 (height and width must be "
                        f"multiples of 32, e.g. {max(32, h // 32 * 32)}x{max(32, w // 32 * 32)})")
    return h, w
