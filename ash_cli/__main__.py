"""`python -m ash_cli`: the `ash` command."""

from ash_cli.app import main

main()
