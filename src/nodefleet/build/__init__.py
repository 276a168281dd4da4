"""`nodefleet build`: a scheduler of jobs (what to build, for which platform) over healthy native nodes. Imports
nothing itself, so that `nodefleet --help` stays fast; the command is nodefleet.build.command.build."""
