"""The staff console: escalated chats taken over by people, in a web page at /console/."""
