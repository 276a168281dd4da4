"""`python -m nodefleet` runs the command-line interface."""

from nodefleet.cli import main

main()
