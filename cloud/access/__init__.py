"""People and what they may see: users, roles, scopes, sessions, the audit log."""
