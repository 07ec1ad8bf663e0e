"""Appeals against locks, identity verification, the user's own freeze ("not me") and lock release."""
