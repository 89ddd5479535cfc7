"""`python -m dispatcher` is the `dispatch` command."""

from dispatcher.processes.cli import main

main()
