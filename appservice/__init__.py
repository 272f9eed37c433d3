"""The Matrix transport: the transaction receiver and a small client-server API.

Never imports bot/: it hands events to a sink and offers calls with timeouts.
"""
