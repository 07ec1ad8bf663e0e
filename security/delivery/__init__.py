"""Delivery: the outbox dispatcher, Standard Webhooks signing, e-mail and SMS senders."""
