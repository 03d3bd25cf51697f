"""What the commands share through typer's ``ctx.obj``: the settings, and ``--target`` applied to them."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated

import typer

from core.errors import LabError
from core.settings import Settings, get_settings

Target = Annotated[
    str | None,
    typer.Option("--target", "-t", help="dbt target: duckdb (embedded) or postgres. Default: LAB_DBT_TARGET."),
]


class LabContext:
    """The app callback puts one in ``ctx.obj``; every command reads its settings from it."""

    @cached_property
    def settings(self) -> Settings:
        """The process-wide settings, read on first use rather than in the callback.

        Click runs the app callback before it parses a command's ``--help``, and
        help must work even when a ``LAB_*`` variable is invalid.
        """
        return get_settings()


def settings_for(ctx: typer.Context, target: str | None = None) -> Settings:
    """The settings a command runs with: the app's, with the dbt target of ``--target`` if given."""
    lab = ctx.find_object(LabContext)
    assert lab is not None, "the app callback puts a LabContext in ctx.obj"
    settings = lab.settings
    if target is None:
        return settings
    if target not in {"duckdb", "postgres"}:
        raise LabError(f"--target must be duckdb or postgres, not {target!r}")
    return settings.model_copy(update={"dbt_target": target})
