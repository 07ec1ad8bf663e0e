"""Account status, locks and brute-force protection."""
