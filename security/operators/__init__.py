"""Operators: the people reviewing locks and appeals (roles, sign-in, sessions, API tokens, CLI)."""
