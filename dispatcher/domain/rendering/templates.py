"""Our documents' own Jinja2 templates (templates/ at the repository root): cover page, email HTML, copy,
the unsubscribe page.

These are not campaign authors' letters (those go through the sandbox in dispatcher.domain.templating,
with autoescape off): they are part of the program, so a plain Environment reads them. Templates named
``*.html.j2`` escape every value they insert; ``*.txt.j2`` and the rest insert values as they are. A
missing value is an error, never a blank.

In a source checkout (a worktree or an editable install) the templates are read from its templates/
folder, next to this code; installed from a wheel, they are the package ``dispatch_templates``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

PACKAGE = "dispatch_templates"
FAX_COVER = "fax/cover.jsonl.j2"
EMAIL_LETTER = "email/letter.html.j2"
COPY_SUBJECT = "copy/subject.txt.j2"
COPY_TEXT = "copy/supporter.txt.j2"
COPY_HTML = "copy/supporter.html.j2"
UNSUBSCRIBE_PAGE = "web/unsubscribe.html.j2"  # served by `dispatch web` (dispatcher/processes/unsubscribe_web.py)
# Every template the code renders by name; the ones they extend or import are found through these.
TEMPLATE_NAMES = (FAX_COVER, EMAIL_LETTER, COPY_SUBJECT, COPY_TEXT, COPY_HTML, UNSUBSCRIBE_PAGE)

_CHECKOUT = Path(__file__).resolve().parents[3]


def environment(*, loader: jinja2.BaseLoader) -> jinja2.Environment:
    """An environment for our templates: HTML ones escaped, undefined values refused."""
    return jinja2.Environment(
        loader=loader,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def default_loader() -> jinja2.BaseLoader:
    """The checkout's templates/ folder when this code runs from one, else the installed package."""
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "templates").is_dir():
        return jinja2.FileSystemLoader(_CHECKOUT / "templates")
    return jinja2.PackageLoader(PACKAGE, package_path=".")


@cache
def default_environment() -> jinja2.Environment:
    """The environment reading the default templates, built once per process."""
    return environment(loader=default_loader())


def render(name: str, context: Mapping[str, Any], *, templates: jinja2.Environment | None = None) -> str:
    """Render one template by name, from ``templates`` or else the default environment."""
    return (templates or default_environment()).get_template(name).render(context)


def static_directory() -> Path:
    """The console's static files (stylesheet, the live log's script): templates/web/static."""
    if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "templates").is_dir():
        return _CHECKOUT / "templates" / "web" / "static"
    from importlib.resources import files

    return Path(str(files(PACKAGE).joinpath("web", "static")))
