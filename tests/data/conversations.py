"""Long conversations between two people, made by code, with questions whose evidence is known:
the benchmark set for memory search (bench/recall.py) and its small fixture (tests).

Each conversation is one workspace: two people talking over many sessions (a topic, a date), most
of it small talk, with facts in between. Both people state facts of the same kinds ("I drive a
Volvo" / "I drive a Mazda"), in the first person, so a question that names a person ("What car
does Evan drive?") is only answered by knowing who spoke; the other person asks about the same
things ("do you still drive that old car?"), so the words alone find decoys too. Kinds:

- single: one fact, asked with the fact's words;
- paraphrase: one fact, asked with other words;
- temporal: when something happened ("When did Maria run her first marathon?"), which only the
  message's date answers;
- multi: facts spread over several messages and sessions ("Which cities has Dana been to?");
- inference: a preference asked about as a suggestion ("Would Tom enjoy a hiking trip?").

Deterministic for a seed. Never tuned against: the texts are made before any search runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.memory import MemoryInput

NAMES = (
    "Evan Maria Dana Lukas Priya Tom Aiko Omar Sofia Jonas Leila Marco Nadia Felix Grace Hugo "
    "Irene Karim Lena Mateo"
).split()

TOPICS = (
    "weekend plans",
    "work chat",
    "catching up",
    "random thoughts",
    "holiday ideas",
    "family news",
    "books and films",
    "cooking",
    "sports talk",
    "late night chat",
)

# Attribute facts: (family, statement, question with its words, paraphrased question, values).
ATTRIBUTES = (
    (
        "car",
        "I drive a {v} these days, it's been great on long trips.",
        "What car does {n} drive?",
        "Which vehicle does {n} own?",
        ["Volvo", "Mazda", "Tesla", "Fiat", "Subaru", "Toyota", "Peugeot", "Skoda"],
    ),
    (
        "pet",
        "My dog {v} chewed through another pair of shoes this morning.",
        "What is the name of {n}'s dog?",
        "What is {n}'s puppy called?",
        ["Biscuit", "Pepper", "Rocky", "Luna", "Mochi", "Ziggy", "Bruno", "Nala"],
    ),
    (
        "hometown",
        "I grew up in {v}, a small place by the river.",
        "Where did {n} grow up?",
        "What town is {n} originally from?",
        ["Ghent", "Porto", "Bergen", "Lviv", "Tartu", "Cork", "Graz", "Split"],
    ),
    (
        "job",
        "I started working as a {v} last year and I still like it.",
        "What does {n} work as?",
        "What is {n}'s profession?",
        ["nurse", "carpenter", "pharmacist", "translator", "pilot", "librarian", "chef"],
    ),
    (
        "instrument",
        "I've been practicing the {v} every evening, the neighbours must hate me.",
        "What instrument does {n} practice?",
        "Which musical hobby did {n} pick up?",
        ["cello", "banjo", "trumpet", "harp", "accordion", "saxophone", "ukulele"],
    ),
    (
        "food",
        "Honestly {v} is my favourite thing to eat, I could have it every day.",
        "What is {n}'s favourite food?",
        "Which dish does {n} love most?",
        ["ramen", "paella", "lasagna", "falafel", "pierogi", "curry", "tacos", "risotto"],
    ),
)

# Events: (statement, question). The question is answered by the message's date.
EVENTS = (
    ("I finally ran my first marathon today, my legs are gone!", "When did {n} run a marathon?"),
    ("We moved into the new flat today, boxes everywhere.", "When did {n} move into a new flat?"),
    ("I got promoted this morning, still can't believe it.", "When did {n} get promoted?"),
    ("I broke my wrist skating today, so typing one-handed.", "When did {n} break a wrist?"),
    ("Passed my driving test today, first try!", "When did {n} pass the driving test?"),
    ("I adopted a kitten from the shelter today.", "When did {n} adopt a kitten?"),
)

TRIPS = ["Kyoto", "Lisbon", "Oslo", "Marrakesh", "Reykjavik", "Valencia", "Prague", "Tallinn"]
TRIP_LINES = (
    "Just got back from {v}, the food was amazing.",
    "The conference in {v} was exhausting but worth it.",
    "Spent a long weekend in {v}, walked everywhere.",
)
TRIP_QUESTION = "Which cities has {n} travelled to?"

LIKES = (
    (
        "I love spending my weekends up in the mountains, the trails are so quiet.",
        "Would {n} enjoy a hiking trip?",
    ),
    (
        "Nothing beats a rainy afternoon with a thick novel and tea.",
        "Would {n} like a bookshop gift card?",
    ),
    (
        "I could watch old black and white films all night.",
        "Would {n} enjoy a classic cinema evening?",
    ),
)

# Small talk: the other person's questions reuse the facts' words (decoys for words alone).
DECOYS = (
    "Do you still drive that old car of yours?",
    "How is your dog doing, still chewing everything?",
    "Where did you say you grew up again?",
    "How's the new job treating you?",
    "Are you still practicing that instrument every evening?",
    "What do you feel like eating tonight?",
    "When are you travelling next?",
    "Have you been up in the mountains lately?",
    "Did you run today?",
    "Are the boxes unpacked yet?",
)
CHAT = (
    "Haha yes, {a}.",
    "I'm so tired after {b}.",
    "Did you see {c} yesterday?",
    "Not much going on here, just {b}.",
    "That sounds {d}!",
    "Ugh, {a}, as usual.",
    "Can't wait for {c}.",
    "Lol, that's {d}.",
    "I'll call you after {b}.",
    "Tell me more about {c}.",
)
FILL = {
    "a": ["the weather is awful", "the train was late", "work is busy", "my phone died", "it rained"],
    "b": ["the gym", "a long meeting", "cleaning the kitchen", "the school run", "grocery shopping"],
    "c": ["the match", "that new series", "the fireworks", "the news", "the game"],
    "d": ["amazing", "hilarious", "exhausting", "so weird", "lovely", "stressful"],
}


@dataclass(frozen=True, slots=True)
class Message:
    event_id: str
    sender: str
    """A localpart: the person's name in lower case."""
    text: str
    at: datetime
    room: str
    topic: str


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    kind: str
    evidence: tuple[str, ...]
    """The event IDs of the messages that hold the answer."""


@dataclass
class Conversation:
    id: str
    people: tuple[str, str]
    messages: list[Message] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


def _chat(rng: random.Random) -> str:
    template = rng.choice(CHAT)
    return template.format(**{k: rng.choice(v) for k, v in FILL.items()})


def conversation(index: int, rng: random.Random, *, sessions: int, per_session: int) -> Conversation:
    a, b = NAMES[(2 * index) % len(NAMES)], NAMES[(2 * index + 1) % len(NAMES)]
    conv = Conversation(f"conv{index}", (a, b))
    start = datetime(2023, 1, 9, 18, 0, tzinfo=UTC) + timedelta(days=index * 3)
    days = sorted(rng.sample(range(0, 400), sessions))
    planned: list[tuple[str, str, list[tuple[str, str]]]] = []
    """(question text, kind, [(person, text)]): the texts that answer it."""
    for _family, statement, asked, paraphrased, values in ATTRIBUTES:
        picked = rng.sample(values, 2)
        for person, value in zip((a, b), picked, strict=True):
            text = statement.format(v=value)
            planned.append((asked.format(n=person), "single", [(person, text)]))
            planned.append((paraphrased.format(n=person), "paraphrase", [(person, text)]))
    for person in (a, b):
        for statement, asked in rng.sample(EVENTS, 2):
            planned.append((asked.format(n=person), "temporal", [(person, statement)]))
        cities = rng.sample(TRIPS, 3)
        lines = [(person, rng.choice(TRIP_LINES).format(v=city)) for city in cities]
        planned.append((TRIP_QUESTION.format(n=person), "multi", lines))
        statement, asked = rng.choice(LIKES)
        planned.append((asked.format(n=person), "inference", [(person, statement)]))
    texts = {(p, t) for _, _, evidence in planned for p, t in evidence}
    slots = rng.sample(range(sessions * per_session), len(texts))
    placed = dict(zip(slots, sorted(texts), strict=True))
    event_of: dict[tuple[str, str], str] = {}
    n = 0
    for s, day in enumerate(days):
        topic = rng.choice(TOPICS)
        room = f"!{conv.id}-s{s}:bench"
        at = start + timedelta(days=day, minutes=rng.randrange(0, 180))
        speaker = rng.choice((a, b))
        for m in range(per_session):
            slot = s * per_session + m
            if slot in placed:
                speaker, text = placed[slot]
            else:
                speaker = b if speaker == a else a
                text = rng.choice(DECOYS) if rng.random() < 0.2 else _chat(rng)
            n += 1
            event_id = f"${conv.id}-{n}"
            if slot in placed:
                event_of[placed[slot]] = event_id
            at += timedelta(seconds=rng.randrange(20, 400))
            conv.messages.append(Message(event_id, speaker.lower(), text, at, room, topic))
    for text, kind, evidence in planned:
        conv.questions.append(Question(text, kind, tuple(event_of[e] for e in evidence)))
    return conv


def conversations(
    count: int = 10, *, sessions: int = 12, per_session: int = 40, seed: int = 7
) -> list[Conversation]:
    rng = random.Random(seed)
    return [conversation(i, rng, sessions=sessions, per_session=per_session) for i in range(count)]


KINDS = ("single", "paraphrase", "temporal", "multi", "inference")


def as_memories(conv: Conversation) -> list[MemoryInput]:
    """A conversation's messages as the bot stores them: text, session topic, sender, time."""
    return [
        MemoryInput(
            workspace_id=conv.id,
            text=m.text,
            context=m.topic,
            room_id=m.room,
            event_id=m.event_id,
            sender=f"@{m.sender}:bench",
            created_at=m.at,
        )
        for m in conv.messages
    ]
