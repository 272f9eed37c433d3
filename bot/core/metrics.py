"""Prometheus metrics of the bot side. One registry per running bot (no module-level globals):
the transport registers its own metrics (appservice.transactions) in the same registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events_processed = Counter(
            "doryo_events_processed",
            "Persisted events the bot has worked through, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.processing_lag = Histogram(
            "doryo_processing_lag_seconds",
            "Time from an event being persisted to the bot having handled it",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.errors = Counter(
            "doryo_errors",
            "Errors while handling events, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.homeserver_requests = Counter(
            "doryo_homeserver_requests",
            "Requests this process made of the homeserver, by kind (the path's verb: "
            "rooms/send, rooms/typing, presence, …): each is work the homeserver does",
            ["kind"],
            registry=self.registry,
        )
        self.homeserver_retries = Counter(
            "doryo_homeserver_retries",
            "Events whose handling waited for the homeserver to come back",
            registry=self.registry,
        )
        self.rooms_active = Gauge(
            "doryo_rooms_active",
            "Rooms whose events are being worked on right now",
            registry=self.registry,
        )
        self.commands = Counter(
            "doryo_commands",
            "Requests made of the bot, by command",
            ["command"],
            registry=self.registry,
        )
        self.rooms_held = Gauge(
            "doryo_rooms_held",
            "Rooms whose lease this process holds (it handles their events)",
            registry=self.registry,
        )
        self.jobs_held = Gauge(
            "doryo_jobs_held",
            "1 while this process runs the deployment's run-once jobs",
            registry=self.registry,
        )
        self.takeovers = Counter(
            "doryo_takeovers",
            "Work taken over from a process that stopped or died: a room with an event it had "
            "begun, or the run-once jobs",
            ["kind"],
            registry=self.registry,
        )
        self.lease_misses = Counter(
            "doryo_room_lease_misses",
            "Rooms this process was woken for while another process held them (that one handles "
            "their events): work a wake-up cost for nothing",
            registry=self.registry,
        )
        self.inbox_pending = Gauge(
            "doryo_inbox_pending",
            "Events received and not handled yet, in the whole deployment (looked at now and "
            "then)",
            registry=self.registry,
        )
