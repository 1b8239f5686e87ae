"""Customer groups: members as customers, the bot in groups, shared by the group channels."""
