"""The REST API, one module per resource (health, agents, sessions, messages, events,
files, runners, docs); `table` gathers their operations into the route table."""
