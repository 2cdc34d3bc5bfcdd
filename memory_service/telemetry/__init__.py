"""What the service tells its operators: Prometheus metrics, OpenTelemetry traces, log format.

Only this package imports prometheus_client and opentelemetry; the rest of
the service calls its small hooks (metrics.cache_lookup(...),
tracing.span(...)), which cost next to nothing when the feature is off.
docs/observability.md lists every metric, span and log field.
"""
