"""Who is asking and what they may do: authentication, impersonation, authorization (RBAC),
service account tokens. Everything below `api/` that needs a user speaks `user.UserInfo`."""
