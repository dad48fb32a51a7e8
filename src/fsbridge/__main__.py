"""`python -m fsbridge` runs the command-line interface."""

from fsbridge.cli import main

main()
