"""Consumer lag: the ``lag-exporter`` component and the ``lag`` command.

``burrow`` (group status rules) and ``snapshot`` (lag arithmetic) are pure;
``reader`` and ``collect`` talk to Kafka; ``metrics``, ``exporter``, ``table``
and ``commands`` present the result.
"""
