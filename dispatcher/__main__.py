"""`python -m dispatcher` is the `dispatch` command."""

from .cli import main

main()
