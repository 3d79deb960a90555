"""Accounts, tokens, API keys and area scope."""
