"""Webhook delivery (issue 8 moves the delivery core here from ``smsflow/webhooks``).

- ``failover``: which of a subscription's endpoints carries a webhook (the double list's decision, then the
  local rule after a failed attempt), the policy a subscription's endpoints make for the health stage, and the
  ``WebhookAttempt`` observation of a delivery event.
- ``active_lists``: the decisions of ``sms.routes.decisions.v1`` read into the worker.
"""
