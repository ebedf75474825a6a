"""The address a Ray driver gives for its own node when it joins a cluster, shared by the curation job and the
trainer's Ray Train launcher (both join the same kind of cluster). Pure: reads and writes nothing."""

from __future__ import annotations

from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def driver_node_ip(address: str, node_ip: str | None = None) -> str | None:
    """The address the driver gives Ray for its own node: ``node_ip`` when set; 127.0.0.1 for a head on the
    loopback (a cluster on this machine); otherwise None (Ray finds the interface that reaches the head). A
    Ray Client address (``ray://``) runs the driver on the cluster, so it needs none."""
    if node_ip:
        return node_ip
    if "://" in address:
        return None
    host = urlsplit(f"//{address}").hostname  # host:port, [v6]:port, or "auto"
    return "127.0.0.1" if host in LOOPBACK_HOSTS else None
