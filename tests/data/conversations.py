"""Long conversations between two people, made by code, with questions whose evidence is known:
the benchmark set for memory search (bench/recall.py) and its small fixture (tests).

Each conversation is one workspace: two people talking over many sessions (a topic, a date), most
of it small talk, with facts in between. Both people state facts of the same kinds ("I drive a
Volvo" / "I drive a Mazda"), in the first person, so a question that names a person ("What car
does Evan drive?") is only answered by knowing who spoke; the other person asks about the same
things ("Hey Evan, do you still drive that old car?"), so the words alone, the name included, find
decoys too. As in real chats, people call each other by name now and then, small talk is made
from parts so that it seldom repeats word for word, an event has a plan before it and a
follow-up after it (three messages share its words; one happened that day), the other person has
contrary tastes, and wishes to visit a city the first has not been to. Kinds:

- single: one fact, asked with the fact's words;
- paraphrase: one fact, asked with other words;
- temporal: when something happened, asked with the event's words ("When did Maria run a
  marathon?") and with others ("When did Maria finish a long-distance race?"), which only the
  message's date answers;
- multi: facts spread over several messages and sessions ("Which cities has Dana been to?");
- inference: a preference asked about as a suggestion ("Would Tom enjoy a hiking trip?"), two
  per person.

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

# Events: (key, statement, question with its words, paraphrased question). The question is
# answered by the message's date.
EVENTS = (
    (
        "marathon",
        "I finally ran my first marathon today, my legs are gone!",
        "When did {n} run a marathon?",
        "When did {n} finish a long-distance race?",
    ),
    (
        "flat",
        "We moved into the new flat today, boxes everywhere.",
        "When did {n} move into a new flat?",
        "When did {n} change apartments?",
    ),
    (
        "promoted",
        "I got promoted this morning, still can't believe it.",
        "When did {n} get promoted?",
        "When did {n} get a better position at work?",
    ),
    (
        "wrist",
        "I broke my wrist skating today, so typing one-handed.",
        "When did {n} break a wrist?",
        "When did {n} get injured on the ice?",
    ),
    (
        "driving",
        "Passed my driving test today, first try!",
        "When did {n} pass the driving test?",
        "When did {n} get a licence to drive?",
    ),
    (
        "kitten",
        "I adopted a kitten from the shelter today.",
        "When did {n} adopt a kitten?",
        "When did {n} bring home a young cat?",
    ),
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
    (
        "Give me a paddle and a quiet lake and I'm happy for the whole day.",
        "Would {n} like a kayak tour?",
    ),
    (
        "Our board game nights are the best part of my week, I own way too many games.",
        "Would {n} enjoy an evening at a game café?",
    ),
    (
        "I spend whole Sundays in the kitchen trying new recipes from around the world.",
        "Would {n} like a cooking class?",
    ),
)

# What the other person says about the same things: a question naming a person meets these too
# (the words "car", "dog", "marathon" and, at times, the person's name in the text).
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
# Said by the same person before an event ("planning"), and by the other after it: a "when"
# question finds three messages on its words, one of which happened on the day.
BEFORE_AFTER = {
    "marathon": (
        "Signed up for my first marathon, the training plan is brutal.",
        "How are your legs after the marathon?",
    ),
    "flat": (
        "We're looking at a new flat next week, fingers crossed.",
        "How's the new flat, settled in?",
    ),
    "promoted": (
        "My boss hinted I might get promoted soon.",
        "Congrats again on getting promoted!",
    ),
    "wrist": ("Bought skates, going to try skating this winter.", "How's the wrist healing?"),
    "driving": (
        "My driving test is booked, so nervous.",
        "Have you driven anywhere since the driving test?",
    ),
    "kitten": (
        "Thinking about adopting a kitten from the shelter.",
        "How's the kitten settling in?",
    ),
}
# The other person's contrary taste (one per like, same order): "Would Tom enjoy a hiking
# trip?" meets it on meaning.
DISLIKES = (
    "Mountains are not for me, I'd rather spend my weekends in the city.",
    "I never have the patience for long novels, I fall asleep after a page.",
    "Old black and white films bore me to tears, honestly.",
    "You won't get me into a boat, I get seasick just looking at the water.",
    "Board games drag on forever, I always end up bored halfway through.",
    "Cooking stresses me out, I'd rather order in than spend an hour in the kitchen.",
)
WISHES = "I'd love to see {v} one day, everyone says it's beautiful."

# Small talk, made from parts so that it rarely repeats word for word (real chats seldom do).
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
    "Sorry for the late reply, {a}.",
    "We should talk about {c} properly over coffee.",
    "Just back from {b}, {a}.",
    "Honestly {c} was {d}.",
    "No way, {d}.",
    "I keep thinking about {c}.",
    "Today was {d}, {a}.",
    "Remind me to tell you about {b}.",
)
FILL = {
    "a": [
        "the weather is awful",
        "the train was late",
        "work is busy",
        "my phone died",
        "it rained",
        "the neighbours are loud again",
        "the heating broke",
        "I overslept",
        "traffic was a mess",
        "the printer jammed twice",
        "my laptop keeps crashing",
        "the bus never came",
        "I forgot my keys",
        "the wifi is down",
        "my sister visited",
        "I burned the toast",
    ],
    "b": [
        "the gym",
        "a long meeting",
        "cleaning the kitchen",
        "the school run",
        "grocery shopping",
        "the dentist",
        "a double shift",
        "painting the hallway",
        "yoga class",
        "the laundry",
        "a video call with my parents",
        "fixing the bike",
        "the quarterly report",
        "choir practice",
        "walking around the park",
        "a workshop on budgets",
    ],
    "c": [
        "the match",
        "that new series",
        "the fireworks",
        "the news",
        "the game",
        "the election debate",
        "the concert in the park",
        "that documentary about whales",
        "the storm warning",
        "the new bakery on the corner",
        "the quiz night",
        "that podcast I sent you",
        "the street festival",
        "the eclipse",
        "the cooking show final",
        "the office party",
    ],
    "d": [
        "amazing",
        "hilarious",
        "exhausting",
        "so weird",
        "lovely",
        "stressful",
        "wild",
        "boring",
        "adorable",
        "ridiculous",
        "unexpected",
        "brilliant",
        "a bit much",
        "so relaxing",
    ],
}
ADDRESSED = ("Hey {n}, ", "{n}, ", "Oh {n}, ")
"""People call each other by name now and then: the name is in the text, not only the sender."""


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


def _addressed(rng: random.Random, other: str, text: str) -> str:
    if rng.random() >= 0.15:
        return text
    return rng.choice(ADDRESSED).format(n=other) + text[0].lower() + text[1:]


def _chat(rng: random.Random, other: str) -> str:
    """One or two lines of small talk, now and then calling the other person by name."""
    parts = [rng.choice(CHAT) for _ in range(1 if rng.random() < 0.5 else 2)]
    text = " ".join(p.format(**{k: rng.choice(v) for k, v in FILL.items()}) for p in parts)
    return _addressed(rng, other, text)


def _decoy(rng: random.Random, other: str) -> str:
    text = rng.choice(DECOYS)
    if rng.random() < 0.5:
        text += " " + _chat(rng, other)
    return _addressed(rng, other, text)


Line = tuple[str, str]
"""(person, text): one message to place; its position in a conversation's plan is its key."""


def conversation(
    index: int, rng: random.Random, *, sessions: int, per_session: int
) -> Conversation:
    a, b = NAMES[(2 * index) % len(NAMES)], NAMES[(2 * index + 1) % len(NAMES)]
    conv = Conversation(f"conv{index}", (a, b))
    start = datetime(2023, 1, 9, 18, 0, tzinfo=UTC) + timedelta(days=index * 3)
    days = sorted(rng.sample(range(0, 400), sessions))
    groups: list[list[Line]] = []
    """Messages placed in this order (a plan, then the event, then the other's follow-up)."""
    planned: list[tuple[str, str, list[tuple[int, int]]]] = []
    """(question text, kind, [(group, position)]): the messages that answer it."""

    def place(*lines: Line) -> int:
        groups.append(list(lines))
        return len(groups) - 1

    for _family, statement, asked, paraphrased, values in ATTRIBUTES:
        picked = rng.sample(values, 2)
        for person, value in zip((a, b), picked, strict=True):
            g = place((person, statement.format(v=value)))
            planned.append((asked.format(n=person), "single", [(g, 0)]))
            planned.append((paraphrased.format(n=person), "paraphrase", [(g, 0)]))
    likes = iter(rng.sample(range(len(LIKES)), 4))
    """Two tastes each, none shared: nobody both likes and dislikes the mountains."""
    for person, other in ((a, b), (b, a)):
        for key, statement, asked, paraphrased in rng.sample(EVENTS, 2):
            before, after = BEFORE_AFTER[key]
            g = place((person, before), (person, statement), (other, after))
            planned.append((asked.format(n=person), "temporal", [(g, 1)]))
            planned.append((paraphrased.format(n=person), "temporal", [(g, 1)]))
        cities = rng.sample(TRIPS, 4)
        g = place(*((person, rng.choice(TRIP_LINES).format(v=city)) for city in cities[:3]))
        planned.append((TRIP_QUESTION.format(n=person), "multi", [(g, 0), (g, 1), (g, 2)]))
        place((other, WISHES.format(v=cities[3])))
        for _ in range(2):
            like = next(likes)
            statement, asked = LIKES[like]
            g = place((person, statement))
            planned.append((asked.format(n=person), "inference", [(g, 0)]))
            place((other, DISLIKES[like]))
    total = sum(len(g) for g in groups)
    slots = iter(rng.sample(range(sessions * per_session), total))
    placed: dict[int, tuple[int, int]] = {}
    for g, lines in enumerate(groups):
        for position, slot in enumerate(sorted(next(slots) for _ in lines)):
            placed[slot] = (g, position)
    event_of: dict[tuple[int, int], str] = {}
    n = 0
    for s, day in enumerate(days):
        topic = rng.choice(TOPICS)
        room = f"!{conv.id}-s{s}:bench"
        at = start + timedelta(days=day, minutes=rng.randrange(0, 180))
        speaker = rng.choice((a, b))
        for m in range(per_session):
            slot = s * per_session + m
            other = b if speaker == a else a
            if slot in placed:
                g, position = placed[slot]
                speaker, text = groups[g][position]
            elif rng.random() < 0.2:
                speaker, text = other, _decoy(rng, speaker)
            else:
                speaker, text = other, _chat(rng, speaker)
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
