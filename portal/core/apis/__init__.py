"""APIs (resource servers): the audiences tokens are for, their scopes, and client grants."""
