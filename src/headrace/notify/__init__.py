"""Topics and subscribers: SNS-style publish to webhooks, SMTP email and log files, with every
delivery and its retries recorded in the ledger.

    notifier = Notifier(ledger, {"alerts": [Webhook("http://hooks.local/in"),
                                            Email("smtp.local", to=["ops@example.org"]),
                                            File("/var/log/headrace/alerts.jsonl")]})
    message_id = notifier.publish("alerts", {"job": "composite", "status": "FAILED"},
                                  subject="composite failed")
"""

from headrace.notify.errors import DeliveryFailed, NotifyError, UnknownTopic
from headrace.notify.notifier import Notifier, Topic
from headrace.notify.subscriptions import Email, File, Subscription, Webhook, subscription_from_dict

__all__ = [
    "DeliveryFailed",
    "Email",
    "File",
    "Notifier",
    "NotifyError",
    "Subscription",
    "Topic",
    "UnknownTopic",
    "Webhook",
    "subscription_from_dict",
]
