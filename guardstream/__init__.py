"""guardstream: field-security telemetry from MQTT through Kafka to PostgreSQL and live dashboards."""
__version__ = "0.1.0"
