"""User-facing errors: one line naming the file, the field and the fix; exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any


class InputError(Exception):
    """Bad input from the user (a file, a flag, a dataset); never a bug of ours."""

    def __init__(self, source: str | Path, field: str, problem: str, fix: str) -> None:
        self.source, self.field, self.problem, self.fix = str(source), field, problem, fix
        super().__init__(f"{self.source}: {field}: {problem}. Fix: {fix}")

    def __reduce__(self):  # picklable, so an InputError raised in a Ray worker reaches the driver intact
        return (InputError, (self.source, self.field, self.problem, self.fix))


def exit_on_input_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a CLI entry point: an InputError prints one line and exits 2, no traceback."""

    @wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
