"""Repositories: queries and writes on one Session. They may flush, never commit."""
