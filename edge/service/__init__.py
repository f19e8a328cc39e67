"""`semanticac-edge serve`: the listen pipeline as a long-running service (systemd, MQTT,
Prometheus, an event log). Each output keeps its settings in a frozen dataclass read from
one section of the service config (edge.service.sections)."""
