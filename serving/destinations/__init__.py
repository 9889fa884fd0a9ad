"""Destinations: where segment changes go (a signed webhook; the email platforms), from the outbox, at least once."""
