"""The notifier: events.critical and alerts.actions in; email, webhook and SMS out, escalated until acknowledged."""
