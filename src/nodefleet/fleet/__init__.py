"""The fleet: `up`, `status` and `down` (one module each) over a pure planner (fleet.plan) and the per-host steps
(fleet.work). Imports nothing itself, so that `nodefleet --help` stays fast."""
