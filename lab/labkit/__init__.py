"""The nodefleet test lab: one module per concern, driven by lab/labctl.py (stdlib only)."""
