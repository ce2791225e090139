"""`python -m wbc.cli`: the `wbc` command."""

from wbc.cli import main

main()
