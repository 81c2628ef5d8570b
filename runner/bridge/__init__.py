"""The bridge: one process per sandbox, speaking the bridge protocol, driving an agent.

It runs inside the sandbox, so it imports nothing from the runner's host side.
"""
