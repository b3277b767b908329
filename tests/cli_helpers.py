"""Run the CLI in-process outside pytest's per-test capture (usable from module-scoped fixtures)."""

from __future__ import annotations

import contextlib
import io


def run_in_process(*args) -> tuple[int, str, str]:
    """``alisnet-export ARGS`` in this process; returns (exit code, stdout, stderr)."""
    from alisnet_export.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()
