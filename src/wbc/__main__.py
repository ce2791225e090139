"""`python -m wbc`: the same as the `wbc` command."""

from wbc.cli import main

main()
