"""Watching an engine from outside: logs (:mod:`.logs`), Prometheus metrics (:mod:`.metrics`, with
bounded labels in :mod:`.metric_labels`) and OpenTelemetry traces (:mod:`.telemetry`)."""
