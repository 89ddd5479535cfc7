"""`dispatch user ...` and `dispatch token ...`: the console's and the API's first accounts, from a terminal.

A password is asked at a hidden prompt (twice), or read from standard input with ``--password-stdin`` (one
line) for scripts; it is never an argument (it would be in the shell's history and the process list). A
token's value is printed once, on standard output alone, and never again: the ledger keeps its SHA-256.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dispatcher.domain import accounts, db
from dispatcher.processes.views import text

user_app = typer.Typer(help="Console and API users, with roles: manager, operator, viewer.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (sent as 'Authorization: Bearer <token>').", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    first = typer.prompt("password", hide_input=True)
    second = typer.prompt("password again", hide_input=True)
    if first != second:
        raise accounts.AccountError("the two passwords differ; nothing was changed")
    return str(first)


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[
        list[str], typer.Option("--role", help="manager, operator or viewer; repeat it (or use commas) for several")
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input (one line)")
    ] = False,
    no_password: Annotated[bool, typer.Option("--no-password", help="API tokens only: no console login")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="set an existing user's roles and password")] = False,
) -> None:
    """Add a user who may log in to the console (and hold API tokens)."""
    from dispatcher.processes.cli import _factory, _now, _os_user  # the command line's own (it imports this module)

    accounts.check_name(name)
    accounts.parse_roles(role)  # a wrong role stops before the password is asked
    password = None if no_password else accounts.check_password(_password(password_stdin))
    with db.transaction(_factory()) as session:
        user = accounts.add_user(session, name, roles=role, password=password, now=_now(), replace=replace)
        roles = user.roles
        accounts.record_action(
            session, accounts.command_line(_os_user()), "user.add", now=_now(), reason=f"roles {roles}"
        )
    console.print(text(f"user {user.name}: {roles}"), highlight=False)


@user_app.command("list")
def user_list() -> None:
    """Every user, their roles, and whether they are disabled."""
    from dispatcher.processes.cli import _factory  # the command line's own (it imports this module)

    table = Table(title="Users")
    for column in ("name", "roles", "console login", "created", "disabled"):
        table.add_column(column)
    with db.reading(_factory()) as session:
        for user in accounts.users(session):
            table.add_row(
                text(user.name),
                text(user.roles),
                "yes" if user.password_hash else "no",
                f"{user.created_at:%Y-%m-%d %H:%M}",
                f"{user.disabled_at:%Y-%m-%d %H:%M}" if user.disabled_at else "",
            )
    console.print(table)


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable a user: their sessions end and their tokens stop working."""
    from dispatcher.processes.cli import _factory, _now  # the command line's own (it imports this module)

    with db.transaction(_factory()) as session:
        accounts.disable_user(session, name, now=_now())
    console.print(text(f"user {name.strip().lower()}: disabled"), highlight=False)


@token_app.command("create")
def token_create(
    name: str,
    label: Annotated[str, typer.Option("--label", help="what the token is for, e.g. 'ci' or 'grafana'")] = "token",
) -> None:
    """Create an API token for user NAME; it is printed once, alone on standard output."""
    from dispatcher.processes.cli import _factory, _now  # the command line's own (it imports this module)

    with db.transaction(_factory()) as session:
        value = accounts.create_token(session, name, label=label, now=_now())
    err_console.print(text(f"API token {label!r} for {name.strip().lower()} (shown once; keep it secret):"))
    print(value)


@token_app.command("revoke")
def token_revoke(
    name: str, label: Annotated[str, typer.Option("--label", help="the label the token was created with")]
) -> None:
    """Revoke user NAME's tokens with this label."""
    from dispatcher.processes.cli import _factory, _now  # the command line's own (it imports this module)

    with db.transaction(_factory()) as session:
        revoked = accounts.revoke_token(session, name, label=label, now=_now())
    if not revoked:
        raise accounts.AccountError(f"no live token labelled {label!r} for {name.strip().lower()!r}")
    console.print(text(f"{revoked} token(s) revoked"), highlight=False)
