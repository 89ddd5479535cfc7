"""`dispatch supporters ...`: supporter lists (import, list), and a person's data (export, erase)."""

from __future__ import annotations

import typer

supporters_app = typer.Typer(help="Supporter lists, consent, and a person's data.", no_args_is_help=True)
