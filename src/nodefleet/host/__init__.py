"""What runs on a host: the remote scripts (shipped as `.sh` files), their pure parsers, the probe cache, and the
few host operations (image present, container removed, buildx's OpenSSH path checked)."""
