"""Webhook delivery: the engine, sender, signing, policy, retries and circuits, and the double list's side.

- ``failover``: which of a subscription's endpoints carries a webhook (the double list's decision, then the
  local rule after a failed attempt), the policy a subscription's endpoints make for the health stage, and the
  ``WebhookAttempt`` observation of a delivery event.
- ``active_lists``: the decisions of ``sms.routes.decisions.v1`` read into the worker.
"""
