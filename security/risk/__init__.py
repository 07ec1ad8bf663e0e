"""Risk scoring: features, rules, the pure engine and the login familiarity model."""
