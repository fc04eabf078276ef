"""What every `claimpt` command group shares: the bad-input rule, and options generated from a
frozen config dataclass so that a setting is written once, in its dataclass, with its help."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

import typer

from shared_model.contract.checkpoint import CheckpointError
from shared_model.data import DataValidationError

BAD_INPUT_EXIT = 2


def bad_input_exits_2(command: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input: one plain line naming the file (and row and column when known), no traceback,
    exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (DataValidationError, CheckpointError, FileExistsError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(BAD_INPUT_EXIT) from exc

    return wrapper


def options_from(
    config: type, *, fields: Iterable[str] | None = None, exclude: Iterable[str] = (), into: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a typer command one `--kebab-name` option per field of the dataclass `config` (its
    type, default and the `help` of its metadata), and pass their values to the command as one
    dict in its parameter `into`. `fields` picks and orders the fields (default: all)."""
    hints = typing.get_type_hints(config)
    by_name = {f.name: f for f in dataclasses.fields(config)}
    names = [n for n in (fields if fields is not None else by_name) if n not in set(exclude)]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command, eval_str=True)
        kept = [p for p in signature.parameters.values() if p.name != into]
        generated = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=by_name[name].default,
                annotation=_option(name, hints[name], by_name[name]),
            )
            for name in names
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return command(**kwargs, **{into: values})

        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept] + generated
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # typer must read the signature above, not the command's
        return wrapper

    return decorate


def _option(name: str, kind: Any, field: dataclasses.Field) -> Any:
    flag = "--" + name.replace("_", "-")
    if kind is bool:
        flag = f"{flag}/--no-{name.replace('_', '-')}"
    return Annotated[kind, typer.Option(flag, help=field.metadata.get("help", ""), show_default=True)]
