"""Operator review: the case queue, claims, account timelines and manual lock decisions (``/v1/review``)."""
