"""The app exporter: synthetic probes of every service x region endpoint (`opsstack exporter app`)."""
