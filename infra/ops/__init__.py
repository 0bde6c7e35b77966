"""Operator commands: ``tail``, ``replay``, ``health`` and ``dlq``.

Pure modules decide (``timespec`` parses times, ``records`` renders and
filters records, ``replay_plan`` holds a replay's checkpoint arithmetic,
``dead_letters`` selects and summarises dead letters, ``checks`` aggregates
health results); ``topic_reader``, ``tail``, ``replay``, ``health`` and ``dlq``
talk to Kafka, MQTT, PostgreSQL and HTTP; ``commands`` wires them to argparse.
"""
