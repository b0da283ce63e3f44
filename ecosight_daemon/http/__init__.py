"""The HTTP API beside the daemon: routes, the server thread, the dashboard's pages."""
