"""Test helpers robot teams can use for their own plug-ins (fake publishers, echo robots)."""
