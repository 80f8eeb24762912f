"""The connectors service: connections, OAuth flows, capability matrix, platform calls."""
