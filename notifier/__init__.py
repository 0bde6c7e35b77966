"""The notifier: events.critical and alerts.actions in; email, webhook, SMS and Web Push out,
escalated until acknowledged."""
