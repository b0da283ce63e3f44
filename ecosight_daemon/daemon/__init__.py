"""The long-running service: loop, inbox, signals, status, triggers, schedule, watcher,
systemd, Prometheus."""
