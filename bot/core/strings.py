"""Every sentence the bot says in a room, in one place, so the wording stays consistent.

Command syntax and one-line summaries live with the commands, in bot.commands.catalog.
Sentences are Markdown; placeholders are str.format fields.
"""

from __future__ import annotations

WELCOME_ROOM = (
    "Hi, I'm **{name}**, an AI colleague. Ask me with `@ask …`, or send `!help` for everything "
    "I can do."
)
WELCOME_DM = (
    "Hi, I'm **{name}**. In this chat every message is a question for me. Commands start with "
    "`!` — send `!help` for the list, or `!ws create NAME` to start a workspace for your team."
)

BUSY_STATUS = "Working on a request…"

PONG = "Pong! Your message took {ms} ms to reach me."

HELP_HEADER = "**Commands** — each also works as `@cmd` or `/cmd` (Element: `//cmd`):"
HELP_LINE = "- `{usage}` — {summary}{who}"
HELP_WHO = " _({who})_"
HELP_FOOTER = (
    "Mention me or reply to me to ask a question without `@ask`; in a thread where I answered, "
    "just go on. `!help COMMAND` shows one command."
)
HELP_ENCRYPTED = "I read and write in end-to-end encrypted rooms too."
HELP_NOT_ENCRYPTED = (
    "End-to-end encryption is off on this Doryo: I cannot read encrypted rooms, so Element's "
    "warning in rooms with me is expected."
)
HELP_COMMAND = "`{usage}` — {summary}. Who: {who}."
PAGE_NEXT = "_Page {page} of {pages}_ — `{command} {next}` shows the next."
PAGE_LAST = "_Page {page} of {pages}._"
PAGE_BEYOND = "There are only {pages} pages: `{command} {pages}` shows the last."

HELP_UNKNOWN = "There is no command `{name}`. `!help` lists them all."
NOT_AVAILABLE_TAG = " _(not available yet)_"

NOT_AVAILABLE = (
    "`{usage}` is not available yet in this version of Doryo. `!help` lists what works today."
)
UNKNOWN_COMMAND = "I don't know the command `{word}`. `!help` lists the commands."
USAGE = "Usage: `{usage}`"
EMPTY_ASK = "Ask me something after `@ask`, for example `@ask what did we decide yesterday?`"

STALE_COMMAND = (
    "I was offline when you sent this {age} ago, so I did not run it. Send it again if it still "
    "matters."
)
UNDECRYPTABLE = (
    "{user}, I could not read your encrypted message: its key never reached me (your app had "
    "not shared it with me, or it was sent before I joined). Please send it again."
)
INTERNAL_ERROR = (
    "Something went wrong on my side while handling that (reference `{ref}`). It is logged; "
    "try again, and tell whoever runs Doryo if it keeps happening."
)


# Workspaces (bot/workspaces).
SPACE_TOPIC = "A Doryo workspace: each room is a session the agent takes part in."
WS_CREATED = (
    "Workspace **{name}** is ready, and you are its host: I invited you to its space. "
    "Next: `!session start TOPIC` opens a session room, `!ws invite @user` or `!ws invite` "
    "(for a code) brings people in."
)
CREATE_NOT_ALLOWED = "Creating workspaces is limited to some people on this server."
SPACE_NOT_ADOPTED = "I left the space **{name}** instead of making it a workspace: {reason}"
SPACE_NEEDS_HOST = "only someone with power level 100 in a space can make it a workspace."
NAME_TOO_LONG = "A workspace name is at most 80 characters."
NO_WORKSPACE = (
    "You are not in a workspace yet. Create one with `!ws create NAME`, or join one with "
    "`!ws join CODE`."
)

WHICH_WORKSPACE = (
    "You are in several workspaces ({names}): pick one for this chat with `!ws use NAME`."
)
NOT_IN_WORKSPACE = (
    "This room is not part of a workspace. Use workspace commands in a session room, or in a "
    "direct chat with me."
)
HOST_ONLY = "Only the workspace's host ({host}) can do that."
MEMBERS_ONLY = "Only members of **{name}** can do that."
NEED_POWER = (
    "I don't have the power to do that in this workspace's space: the host can give me power "
    "level 100 there."
)
SEE_HELP = "`!help {command}` explains each."
NOT_USER_IDS = "These are not user IDs: {bad}. Write them like `@alice:example.org`."
INVITED = "Invited {users} to **{name}** and its {sessions} active session(s)."
INVITE_OPTIONS = (
    "`!ws invite` takes user IDs, or for a code an optional number of uses and days "
    "(e.g. `!ws invite 5 14d`)."
)
INVITE_CODE = (
    "Invite code for **{name}**: `{code}` — valid {uses}, until {expires}.\n"
    "Give it to the person; they send `!ws join {code}` to me ({bot}), in a direct chat or here."
)
ONCE = "once"
TIMES = "{n} times"
CODE_UNKNOWN = "That invite code is not valid. Check it with the person who gave it to you."
CODE_EXPIRED = "That invite code has expired. Ask the host for a new one."
CODE_USED = "That invite code has been used up. Ask the host for a new one."
JOIN_TOO_MANY = "Too many wrong invite codes. Try again in {minutes} min."
ALREADY_MEMBER = "You are already in **{name}**."
JOINED = (
    "Welcome to **{name}**! I invited you to its space and its sessions: accept the "
    "invitations in your client."
)
MEMBERS_HEADER = "**Members of {name}**"
MEMBER_LINE = "- {user} — {role}, {presence}{pending}"
MEMBER_INVITED = " _(invited, not joined yet)_"
PRESENCE_UNKNOWN = "presence unknown"
NOT_A_MEMBER = "{user} is not a member of **{name}**."
HOST_NOT_DELEGATE = "{user} is a host already."
DELEGATED = "{user} is now a delegate of **{name}**: they may confirm actions."
UNDELEGATED = "{user} is no longer a delegate of **{name}**."
SETTINGS_HEADER = "**Settings of {name}**"
SETTING_LINE = "- `{key}` = `{value}` — {description}"
EXPORTING = "Exporting **{name}**…"
EXPORTED = (
    "Exported **{name}**: {records} records, {size} compressed — the file is in our direct "
    "chat. Its format: docs/export.md; `doryo import` reads it into another install."
)
EXPORT_TOO_BIG = (
    "The export is {size}, more than this homeserver accepts as an upload ({limit}). Whoever "
    "runs Doryo can write it on the server: `doryo export -c config.yaml --workspace "
    "{workspace} --out export.jsonl.gz`."
)
FORGOT_PERSON = (
    "Forgot {user} in **{name}**: the text of {messages} messages and {memories} memories "
    "deleted; {records} records (the audit log of actions, tasks, usage) now say `{pseudonym}` "
    "or went with them."
)
FORGET_ME_ASK = (
    "This forgets what you said in {count} workspace(s) — {names}: your messages' text in their "
    "sessions, every memory you said or made, your reminders; the audit log keeps what you did "
    "under a pseudonym. It cannot be undone. Send `!forget me confirm` to go on."
)
FORGET_ME_NOTHING = "I hold nothing you said in any workspace."
DELETE_TITLE = "**Delete the workspace {name}?**"
DELETE_WHAT = (
    "This deletes, for good, what Doryo holds of it: {what}, and its members, settings and "
    "invite codes. The Matrix rooms stay with their people, with everything said in them; Doryo "
    "leaves them. Take a copy first with `!ws export`."
)
DELETE_PARTS = {
    "messages": "{n} messages",
    "memories": "{n} memories",
    "sessions": "{n} session(s)",
    "actions": "{n} actions with their audit log",
    "tasks": "{n} tasks",
    "followups": "{n} reminders",
    "usage": "{n} usage records",
    "agents": "{n} Letta agent(s)",
}
"""What a deletion card counts, in this order; nothing counted zero is named, but messages and
memories."""
DELETE_HOW = (
    "React ✅ to delete it or ❌ to keep it (or send `!ws delete confirm` / `!ws delete "
    "cancel`). Expires {expires}."
)
DELETE_AWAITING = "⏳ **Waiting for {host} (host) to confirm**"
DELETE_RUNNING = "⚙️ **Deleting** — confirmed by {by}"
DELETE_DONE = "🗑️ **Deleted** — confirmed by {by}"
DELETE_CANCELLED = "❌ **Kept** — cancelled by {by}"
DELETE_EXPIRED = "⌛ **Expired** without confirmation: the workspace is kept"
DELETE_RESULT = (
    "Deleted {messages} messages, {memories} memories and {records} other records. Doryo left "
    "{rooms} room(s){agents}."
)
DELETE_RESULT_AGENTS = "; {ended} of {count} Letta agent(s) ended"
DELETE_STARTED = "Deleting **{name}**: its card says when it is done."
DELETE_KEPT = "Kept **{name}**: nothing was deleted."
DELETE_OPEN = "A request to delete **{name}** is already waiting for the host: [its card]({card})."
DELETE_RACED = "A request to delete **{name}** was made just now: confirm that one on its card."
DELETE_NOTHING_OPEN = "Nothing is waiting to be confirmed: `!ws delete` asks first."
DELETE_ONLY_HOST = "Only the host ({host}) can confirm or cancel deleting the workspace."
DELETE_FAREWELL = (
    "The workspace **{name}** was deleted by its host: Doryo forgets it and leaves this room. "
    "The room and everything said in it stay."
)
FORGOT_ME = (
    "Done: in {count} workspace(s), the text of {messages} messages and {memories} memories "
    "of yours are deleted. What you say from now on is remembered as before."
)
SETTING_ENCRYPTION_OFF = (
    "I cannot encrypt sessions here: encryption is off in my configuration "
    "(`encryption.enabled`). Ask whoever runs Doryo to turn it on."
)
SETTINGS_FOOTER = "Change one with `!ws settings KEY VALUE`."
RETENTION_LAST_RUN = (
    "_Retention, {date}: deleted {messages} messages and {memories} memories from before "
    "{cutoff}._"
)
NO_SUCH_WORKSPACE = "You have no workspace called `{name}`. Yours: {names}."
NONE = "none"
USING = "In our direct chat, your commands now apply to **{name}**."
USE_ONLY_IN_DM = " (This only matters in a direct chat with me.)"
INVITE_ME_TO = (
    "A room was added to your workspace **{name}**, but I cannot join it: {room}. Invite me "
    "there so that I can take part."
)
NOT_IN_SPACE = (
    "I am no longer in the space of **{name}**, so I cannot tell who may do what there. "
    "Invite me back to the space."
)
BANNED_FROM = "You are banned from **{name}**. Only its host can lift that."
USER_BANNED = "{user} is banned from **{name}**: unban them in the space first."
NO_POWER_HELD = "{user} holds no delegate or host power in **{name}** any more."
INVITE_FAILED = (
    "I could not invite you to **{name}** ({reason}). Your invite code is still valid: ask the "
    "host to check my power in the space, then try again."
)
INVITES_HEADER = "**Open invite codes of {name}**"
INVITE_LINE = "- `{hint}` — {uses}, until {expires}, made by {by}"
INVITE_LINE_OLD = "an older code"
USES_LEFT = "{n} uses left"
USE_LEFT = "1 use left"
NO_INVITES = "**{name}** has no open invite codes. `!ws invite` makes one."
INVITE_REVOKE_USAGE = "Usage: `!ws invite revoke CODE` (the whole code, or its first group)."
INVITE_REVOKED = "Invite code `{hint}` of **{name}** is revoked: nobody can join with it now."
INVITE_NOT_FOUND = "**{name}** has no open invite code starting with `{hint}`."
INVITE_AMBIGUOUS = "Several open codes start with `{hint}`: give the whole code."
CODE_REVOKED = "That invite code was revoked. Ask the host for a new one."
REMOVED_FROM_SESSION = "left the workspace"

# Which rooms are sessions (bot/sessions/adoption.py, docs/security.md).
ADOPT_REFUSED_HOST = "I did not adopt {room} into **{name}**: {reason}."
ADOPT_REFUSED_ROOM = (
    "This room names a workspace's space as its parent, but it is not a session of that "
    "workspace, so nothing said here reaches its memory. Only a host or delegate of the "
    "workspace who can change this room's settings can add it, from the space."
)
WHY_SPACE = "it is a space"
WHY_DIRECT = "it is a direct chat between one person and me"
WHY_OTHER_WORKSPACE = "it is a session of another workspace"
WHY_NOT_LISTED = "the space does not list it"
WHY_NO_ROLE = "{user} is not a host or delegate of the workspace"
WHY_NO_POWER = "{user} has no power in that room to add it to a space"
SESSION_ADOPTED = (
    "This room is now a session of workspace **{name}** (added by {by}): what is said here from "
    "now on is part of the workspace's memory, and `@ask` answers from it. I have not read the "
    "earlier messages: an admin of this room can let me with `!session history`."
)
HISTORY_ADMINS_ONLY = (
    "Only an admin of this room (who can change its settings) can let me read its earlier "
    "messages."
)
HISTORY_NOT_ADOPTED = "I have been in this session since it began: there is nothing earlier."
HISTORY_ALREADY = "{by} already let me read this room's earlier messages."
HISTORY_READ = "Read {count} earlier message(s) of this room into **{name}**'s memory."
NOT_A_SESSION_HERE = (
    "This room is not a session of a workspace, so I answer nothing from a workspace's memory "
    "here. Ask me in a session room, or in a direct chat with me."
)

# Sessions (bot/sessions).
SESSION_DEFAULT_NAME = "Session of {date}"
SESSION_UNTITLED = "untitled"
TOPIC_TOO_LONG = "A session topic is at most 200 characters."
SESSION_STARTED = "Session **{topic}** started: {link}"
SESSION_WELCOME = (
    "Session **{topic}** of workspace **{name}**, started by {by}. Ask me with `@ask …`; "
    "`!help` lists the rest."
)
NOT_A_SESSION = "This room is not a session. Use `!session end` in the session room itself."
SESSION_ALREADY_ENDED = "This session has already ended."
SESSION_ENDED = "This session has ended; I will not answer here any more.\n\n{summary}"
SESSION_IS_ENDED = (
    "This session has ended, so I no longer answer here. Start a new one with "
    "`!session start TOPIC`."
)
SUMMARY = "**Summary of {topic}**: {count} message(s) from {people}, from {first} to {last}."
SUMMARY_EMPTY = "**Summary of {topic}**: nobody wrote anything."
NO_SESSIONS = "**{name}** has no sessions yet. Start one with `!session start TOPIC`."
SESSION_REMOVED = (
    "This room was taken out of **{name}**'s space (by {by}): it is no longer one of its "
    "sessions. I no longer answer here from its memory, nor remember what is said here; what "
    "was said before stays in its memory until forgotten."
)
SESSION_REMOVED_SUMMARY = "(taken out of the workspace's space)"
SESSIONS_HEADER = "**Sessions of {name}**"
SESSION_LINE = "- [{topic}]({link}) — {status}, started {date}"
ACTIVE = "active"
ENDED = "ended"

# Tools and actions (bot/tools, bot/actions).
TOOL_ARG_PROBLEM = "- `{field}`: {problem}"
TOOL_ARGS_INVALID = (
    "The arguments for `{tool}` are not right:\n{problems}\n`!tool {tool}` shows them."
)
ACT_QUOTES = 'A quote is not closed. Write `@act TOOL key=value key="a value with spaces"`.'
ACT_EMPTY = "Say what to do after `@act`, or `@act TOOL key=value …` (`!tools` lists the tools)."
ACT_NOT_KEY_VALUE = "`{token}` is not `key=value`. Write `@act TOOL key=value …`."
ACT_NEEDS_MODEL = (
    "To turn words into an action I need a model, and none is answering. Name the tool yourself: "
    "`@act TOOL key=value …` — tools: {tools}."
)
UNKNOWN_TOOL = "There is no tool `{tool}` here. Tools: {tools}."
TOOL_GONE = "The tool `{tool}` is not available any more."
TOOL_TIMED_OUT = "it took longer than {seconds:.0f} s and was stopped"
TOOL_FAILED = "something went wrong on my side (it is logged)"
TOOL_NOTHING_RAN = "{error}, so nothing ran: propose it again once it is back"
INTERRUPTED = "interrupted: Doryo stopped while it ran, and it is not safe to run it again"
CARD_TITLE = "**Action {code}** — `{tool}`"
CARD_ARG = "- {key}: {value}"
CARD_ARG_IN_THREAD = "- {key}: {length} characters, in full in this card's thread"
CARD_ARG_ELSEWHERE = "({length} characters: in full in the card's thread)"
CARD_ARG_FULL = "Argument {key} of {code}, in full{part}:"
CARD_NO_ARGS = "- (no arguments)"
CARD_REQUESTED = "Requested by {by}."
CARD_HOW = (
    "React ✅ (or 👍) to run it, ❌ to cancel — or `!confirm {code}` / `!cancel {code}`. "
    "Expires {expires}."
)
CARD_RESULT = "**Result:** {summary}"
CARD_AWAITING = "⏳ **Waiting for {host} (host) or a delegate**"
CARD_RUNNING = "⚙️ **Running** — confirmed by {by}"
CARD_DONE = "✅ **Done** — confirmed by {by}"
CARD_ERROR = "⚠️ **Failed**: {error}"
CARD_CANCELLED = "❌ **Cancelled** by {by}"
CARD_EXPIRED = "⌛ **Expired** without confirmation"
HOST_DM = (
    "{by} proposes action **{code}** (`{tool}`) in {room}, and only you or a delegate can "
    "confirm it: {card}"
)
OUTSIDER_REACTION = (
    "{user}, only the host ({host}), a delegate, or for ❌ whoever asked can decide on "
    "{code}: your reaction changes nothing."
)
NO_ACTIONS = "No actions are waiting. `!actions all` shows past ones too."
ACTIONS_HEADER = "**Actions in {name}**"
ACTION_LINE = "- **{code}** `{tool}` — {status}, by {by} on {date}"
NO_SUCH_ACTION = "There is no action `{code}` in this workspace."
NOT_AWAITING = "{code} is not waiting for confirmation any more (it is {status})."
CONFIRM_WHO = "Only the host ({host}) or a delegate can confirm actions."
CANCEL_WHO = "Only the host ({host}), a delegate or whoever asked can cancel an action."
CONFIRMED = "Confirmed {code}: it is running."
CANCELLED = "Cancelled {code}."
NO_TOOLS = "The agent here may use no tools."
TOOLS_HEADER = "**Tools the agent may use here**"
TOOL_LINE = "- `{name}` — {description} _({kind})_"
TOOL_WRITES = "acts: needs the host's ✅"
TOOL_READS = "reads only"
TOOLS_FOOTER = "`!tool NAME` shows a tool's arguments; `@act NAME key=value …` proposes it."
TOOL_HEADER = "**{name}** (version {version}) — {description}"
TOOL_ARG = "- `{name}` ({kind}, {required}): {description}"
REQUIRED = "required"
OPTIONAL = "optional"
TOOL_EXAMPLE = "Example: `@act {name} {example}`"
TASK_CREATED = "Task #{id} created: **{title}**{assignee}"
TASK_FOR = ", for {user}"
THIS_ROOM = "this room"
FOLLOWUP_SET = "Reminder #{id} set for {when}, in {where}."
PROJECT_CREATED = "Session **{topic}** started: {link}"
NOT_A_SESSION_OF = "{room} is not a session of **{name}**."
SUMMARY_PERIOD = "In the last {hours} h: {count} message(s) from {people}."
SUMMARY_MESSAGE = "- {sender}: {text}"
NOBODY = "nobody"
NOTIFICATION = "**From {by}, workspace {name}:** {text}"
NOTIFICATION_SENT = "Sent {user} a direct message."
REMINDER = "⏰ Reminder (set by {by}): {text}"
REMINDER_GAVE_UP = (
    "Your reminder “{text}” could not be posted after {tries} tries, so I stopped trying: "
    "{error}. Set it again where I can post (am I still in that room?)."
)
NO_TASKS = "**{name}** has no open tasks."
TASKS_HEADER = "**Open tasks in {name}**"
TASK_LINE = "- #{id} {title}{extra}"
TASK_DUE = "due {due}"
NO_SUCH_TASK = "There is no open task #{id} in this workspace."
TASK_DONE = "Task #{id} is done."

# Composio (bot/composio): linked accounts, and what its tools say on cards.
COMPOSIO_OFF = (
    "Composio is not set up on this Doryo (`composio.api_key` is empty), so no accounts can be "
    "linked and no Composio tools run. Ask whoever runs it."
)
COMPOSIO_MEMBERS_ONLY = (
    "Linking accounts is for workspace members. Join a workspace (or `!ws create NAME`) first."
)
COMPOSIO_NO_TOOLKIT = "I cannot link `{toolkit}` accounts here. Toolkits: {toolkits}."
COMPOSIO_NO_TOOLKITS = "none are set up (`composio.auth_configs`)"
CONNECT_LINK = (
    "To link your **{toolkit}** account, open this link and sign in: {url}\n\n"
    "The link is for you alone: whoever opens it links an account to you. `!connections` shows "
    "your linked accounts."
)
CONNECT_SENT = "I sent you the link to connect {toolkit} in our direct chat."
ALREADY_CONNECTED = (
    "You have a {toolkit} account linked already (`!connections` shows it). To link another "
    "one instead, `!disconnect ID` the old one first."
)
NO_CONNECTIONS = "You have no linked accounts. `!connect TOOLKIT` links one ({toolkits})."
CONNECTIONS_HEADER = "**Your linked accounts**"
CONNECTION_LINE = "- `{id}` — {toolkit}, {status}, since {date}"
CONNECTIONS_FOOTER = "`!disconnect ID` unlinks one."
NO_SUCH_CONNECTION = "You have no linked account `{id}`. `!connections` lists yours."
DISCONNECTED = "Unlinked your {toolkit} account `{id}`."
COMPOSIO_MUST_CONNECT = (
    "{user} must link a {toolkit} account first: send me `!connect {toolkit}`. This workspace "
    "runs Composio actions with {whose} account (`!ws settings composio_account`)."
)
COMPOSIO_WHOSE_HOST = "the host's"
COMPOSIO_WHOSE_REQUESTER = "the requester's"
COMPOSIO_TIMED_OUT = "Composio did not answer within {seconds:.0f} s"
COMPOSIO_REFUSED = "Composio refused: {message}"
COMPOSIO_DOWN = "Composio is not working right now ({message}): try again later"
COMPOSIO_UNREACHABLE = "Composio cannot be reached right now"
COMPOSIO_ERROR = "Composio failed: {error}"
COMPOSIO_NO_LINK = "it made no link"
COMPOSIO_NO_REASON = "no reason given"
COMPOSIO_TOOL_FAILED = "`{tool}` did not succeed: {error}"
COMPOSIO_UNEXPECTED = "`{tool}` answered something I cannot read"
COMPOSIO_UNKNOWN_TOOLS = "Composio has no tool {tools}."
COMPOSIO_NO_VERSION = (
    "Composio tool {tool} has no version to pin; set `composio.toolkit_versions.{toolkit}`."
)
COMPOSIO_BAD_SCHEMA = "The arguments of Composio tool {tool} cannot be read: {error}"
COMPOSIO_TOOL_DONE = "`{tool}` ran with {user}'s account.{links}"
GITHUB_REPO_CREATED = "Created the GitHub repository [{repo}]({url}) from `{template}`."
GITHUB_REPO_EXISTS = "The GitHub repository [{repo}]({url}) exists already; nothing was changed."
NOTION_ITINERARY_CREATED = "Created the Notion itinerary [{title}]({url}): {days} days, {cities}."
NOTION_ITINERARY_EXISTS = "A Notion page [{title}]({url}) exists already; nothing was changed."
NOTION_NO_PARENT = (
    "The linked Notion account shares no page to put the itinerary under: share one with it, or "
    "give `parent_page=…`."
)
NOTION_BAD_PAGE = "`{page}` is not a Notion page ID or link."
ITINERARY_INTRO = "{days}-day trip: {route}"
ITINERARY_PREFS = "Preferences: {prefs}"
ITINERARY_DAY = "Day {number} — {cities}"
ITINERARY_TRAVEL = "Travel from {start} to {end}"
ITINERARY_PARTS = ("Morning: ", "Afternoon: ", "Evening: ")
BUDGET_HEADER = ("Item", "Category", "Amount")
BUDGET_TOTAL = "Total"
SHEET_CREATED = "Created the budget sheet [{name}]({url}): {count} items, {total} in all."
SHEET_EXISTS = "A spreadsheet [{name}]({url}) exists already; nothing was changed."

# The agent (bot/agent): @ask, !agent, !usage.
ANSWER_THINKING = "…"
ANSWER_EMPTY = "(The model gave an empty answer.)"
ANSWER_CUT = "The answer was cut here: it is longer than a Matrix message can hold."
ANSWER_NOT_SHOWN = (
    "⚠️ The homeserver refused to show this answer ({error}); ask again, perhaps more narrowly."
)
ANSWER_SOURCES = "Sources:"
ANSWER_FAILED = "Something went wrong on my side while answering (it is logged); ask again."
ANSWER_NO_MODEL = "{reason} Here is what I remember that looks relevant:"
ANSWER_NO_MODEL_NOTHING = "{reason} I found nothing in the workspace's memory about it either."
ANSWER_TOOL_REFUSED = (
    "error: `{tool}` is not available while answering; actions go through @act and need the "
    "host's confirmation"
)
ASK_PLACE = "workspace {name}, session {topic}"

# Letta agents (bot/letta).
LETTA_DOWN = (
    "The Letta server ({url}) did not answer: {reason}. An admin should check that it runs and "
    "that `letta.base_url` and `letta.api_key` are right."
)
LETTA_REFUSED = "The Letta server ({url}) refused the request: {reason}."
LETTA_FALLBACK = "⚠️ {problem} Doryo's built-in agent answers instead."
LETTA_AGENT_ERROR = "The Letta agent stopped with an error: {reason}"
LETTA_AWAITING = (
    "_Waiting for the host's ✅ on action {code} (above) before going on; ❌ declines it._"
)
LETTA_BUSY = (
    "This workspace's Letta agent waits for the host's decision on action {code}; it takes new "
    "questions once that is ✅ or ❌."
)
LETTA_TOOL_NOT_ALLOWED = "error: the tool `{tool}` is not available to this agent here"
LETTA_ONE_ACTION = (
    "error: only one action can wait for the host's confirmation at a time; propose `{tool}` "
    "again once the pending one is decided"
)
LETTA_TOOL_FAILED = "error: {error}"
LETTA_DECLINED = "The workspace host did not approve this action: {why}."
LETTA_WHY_CANCELLED = "cancelled by {by}"
LETTA_WHY_EXPIRED = "it expired without confirmation"
LETTA_WHY_INTERRUPTED = "it was interrupted by a restart and not run"
LETTA_SUMMARY = (
    "Workspace: {name} (host {host}). Sessions, newest first:\n{sessions}\n"
    "Use the search_docs tool to look up what the workspace said, decided or remembered."
)
LETTA_SESSION_LINE = "- {topic} ({status}, since {date}){summary}"
LETTA_NO_SESSIONS = "- (none yet)"
ASK_PLACE_DIRECT = "workspace {name}, a direct chat"
AGENT_BAD_REF = "`{ref}` is not a blueprint reference: write CODE or CODE@VERSION, e.g. planner@2."
AGENT_HERE = "Answering here: **{name}** (`{ref}`, {source}), model {model}. Tools: {tools}."
AGENT_SOURCE_SESSION = "this session's choice"
AGENT_SOURCE_WORKSPACE = "the workspace's choice"
AGENT_DEFAULT_MODEL = "the default ({model})"
AGENT_USING = "From now on **{name}** (`{ref}`) answers in this session."
AGENT_USE_WHERE = "`!agent use` works in a session room (it switches that session)."
ACT_NO_TOOL = "I could not turn that into an action with my tools. The model said: {text}"
ACT_SEVERAL = (
    "_I proposed the first of the {count} actions the model suggested; ask for the others._"
)
USAGE_HEADER = "**Model use in {name}, last {days} days**"
USAGE_LINE = "| {agent} | {model} | {calls} | {tokens_in} | {tokens_out} | {cost} | {errors} |"
USAGE_TABLE_HEAD = (
    "| agent | model | calls | tokens in | tokens out | cost (USD) | failed |\n"
    "|---|---|---|---|---|---|---|"
)
USAGE_NONE = "No model calls in **{name}** in the last {days} days."
USAGE_TOTAL = "Total: {calls} calls, {cost} USD."
USAGE_PERIOD = "`!usage` takes 7d or 30d."
MEMORY_OFF = "The workspace's memory is not available right now (see the bot's log)."
SEARCH_NOTHING = "Nothing in memory matches `{query}`."
SEARCH_HIT = "[{n}] ({kind}, {when}) {text}"

# Memory commands (bot/memory/commands.py) and blueprints (bot/blueprints/commands.py).
REMEMBERED = "Remembered, as memory #{id}. `!forget {id}` takes it back."
NO_SUCH_MEMORY = "There is no memory #{id} in this workspace."
FORGET_WHO = "Only the host ({host}) or whoever added it can forget a memory."
FORGOTTEN = "Forgot memory #{id}."
MEMORY_STATS = (
    "**Memory of {name}**: {items} item(s) — {kinds}. Embeddings: {model}. "
    "`!memory QUERY` searches it."
)
MEMORY_RESULTS = "**Memory for** `{query}`:"
MEMORY_RESULT = "- #{id} ({kind}, {when}) {text}{link}"
BLUEPRINT_ADMINS_ONLY = (
    "Blueprints are shared by every workspace here, so only Doryo's admins (bot.admins in its "
    "config) can change them."
)
BLUEPRINTS_HEADER = "**Blueprints**"
BLUEPRINT_LINE = "- `{code}` v{version} — **{name}**: {description}"
BLUEPRINT_SHOW = "**{name}** (`{ref}`)\n```yaml\n{yaml}\n```"
BLUEPRINT_CREATED = "Blueprint **{name}** created (`{ref}`)."
BLUEPRINT_EDITED = "Blueprint **{name}** is now `{ref}`."
BLUEPRINT_UNCHANGED = "Nothing changed: **{name}** stays `{ref}`."
BLUEPRINT_HISTORY_HEADER = "**Versions of `{code}`**"
BLUEPRINT_VERSION_LINE = "- v{version}{current} — {date}, by {by}"
BLUEPRINT_CURRENT = " _(current)_"
BLUEPRINT_ROLLED_BACK = "Blueprint **{name}** is back at `{ref}`."

# Memory (bot/memory). These end up inside stored memories, and are shown with them.
REDACTED_EMAIL = "[email]"
REDACTED_PHONE = "[phone]"
MEMORY_SUMMARY_HEADER = "Summary of {count} messages from {start} to {end}:"
MEMORY_SUMMARY_LINE = "- {sender}: {text}"
MEMORY_SUMMARY_SOMEONE = "someone"
# For a room, when memory cannot be searched by meaning until the operator re-embeds it.
MEMORY_NEEDS_REINDEX = (
    "My memory was made with another embedding model than the one configured now, so I can "
    "only search it by words until whoever runs Doryo runs `doryo reindex`."
)

# The LLM router (bot/llm): errors and notes that reach a room.
LLM_UNAVAILABLE = "No model answered: {failures}."
LLM_FAILURE = "{model} {reason}"
LLM_FALLBACK_NOTE = "{failed} did not answer, so {model} did."
LLM_REASON_SKIPPED = "skipped (failing, probed again in {retry})"
LLM_REASON_TIMEOUT = "timed out after {after}"
LLM_REASON_NO_FIRST_TOKEN = "sent nothing for {after}"
LLM_REASON_RETRIES = "{reason}, {attempts} tries"
LLM_UNKNOWN_MODEL = (
    "There is no model `{ref}`. Name one as `provider/model` with a configured provider "
    "({providers}){aliases}."
)
LLM_UNKNOWN_MODEL_ALIASES = ", or an alias ({aliases})"
LLM_SCOPES = {"agent": "This agent's", "workspace": "This workspace's", "user": "Your"}
LLM_RATE_UNITS = {"requests": "requests", "tokens": "tokens"}
LLM_RATE_LIMITED = (
    "{scope} limit of {amount} {unit} a minute to the model is reached; it resets in {reset}."
)
LLM_BUDGET_SCOPES = {"agent": "This agent's", "workspace": "This workspace's"}
LLM_BUDGET_REFUSED = (
    "{scope} monthly model budget of ${limit} is spent (${spent} so far this month). It resets "
    "on {reset}."
)
LLM_BUDGET_DOWNGRADED = (
    "{scope} monthly model budget of ${limit} is spent, so the cheaper {model} answered "
    "instead until it resets on {reset}."
)

# Agent blueprints (bot/blueprints).
BLUEPRINT_INVALID = "Blueprint `{code}` is not valid:\n{problems}"
BLUEPRINT_PROBLEM = "- `{field}`: {problem}"
BLUEPRINT_UNKNOWN_KEY = "unknown key"
BLUEPRINT_BAD_CODE = "must be 2 to 32 of a-z, 0-9, _ and -, starting with a letter"
BLUEPRINT_NO_INSTRUCTIONS = "missing (here or in the blueprint it extends)"
BLUEPRINT_NO_LETTA = "`letta` needs a Letta server: set `letta.base_url` in the config"
BLUEPRINT_UNKNOWN_TOOLS = "unknown tool {tools} (known: {known})"
BLUEPRINT_DUPLICATE_TOOLS = "listed twice: {tools}"
BLUEPRINT_CYCLE = "extends itself: {chain}"
BLUEPRINT_NO_PARENT = "there is no blueprint `{parent}` to extend"
BLUEPRINT_NOT_FOUND = "There is no blueprint `{code}`. `!blueprint list` shows them."
BLUEPRINT_NO_VERSION = "Blueprint `{code}` has no version {version} (it has 1 to {latest})."
BLUEPRINT_EXISTS = (
    "A blueprint `{code}` exists already; make a new version with `!blueprint edit`."
)
BLUEPRINT_CODE_CHANGE = "A blueprint keeps its code (`{code}`); create a new one instead."
BLUEPRINT_BAD_YAML = "That is not valid YAML: {error}"
BLUEPRINT_NOT_A_MAPPING = "A blueprint is a YAML mapping of keys (code, name, model, …)."
BLUEPRINT_DUPLICATE_FILE = "Blueprint `{code}` is defined twice: in {first} and in {second}."


def duration(ms: int) -> str:
    """A short human duration: 850 ms, 12 s, 4 min, 3 h, 2 days."""
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms // 1000
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h"
    return f"{hours // 24} days"


# Workspace settings (`!ws settings KEY VALUE`)
SETTING_ON_OFF = "{field} is on or off."
SETTING_BAD_BUDGET = "budget is a number of USD a month (or none), not `{raw}`."
SETTING_BAD_RETENTION = "retention is a number of days, not `{raw}`."
SETTING_UNKNOWN = "There is no setting `{key}`. Settings: {keys}."
SETTING_INVALID = "`{raw}` is not a valid {name}: {reason}."

# `doryo forget` (the command line)
NO_WORKSPACE_ID = "There is no workspace {workspace}."


# Catch-up (bot/agent/catchup.py).
CATCHUP_USAGE = (
    "Usage: `!catchup` (since you last read), or `!catchup WINDOW`: `30m`, `2h`, `3d`, `today`, "
    "`since yesterday` (at most 90 days)."
)
CATCHUP_WHERE = (
    "`!catchup` works in a session (what you missed there) or in our direct chat (across "
    "your sessions)."
)
CATCHUP_NOTHING = "Nothing new from others here since {since}."
CATCHUP_NOTHING_ANYWHERE = "Nothing new from others in your sessions since {since}."
CATCHUP_SINCE_READ = "you last read here ({time} UTC)"
CATCHUP_SINCE_READ_ANYWHERE = "you last read them"
CATCHUP_SINCE_OWN = "your last message here"
CATCHUP_SINCE_START = "the session began (I have no read marker of yours here)"
CATCHUP_TODAY = "the start of today (UTC)"
CATCHUP_YESTERDAY = "the start of yesterday (UTC)"
CATCHUP_LAST = "{amount} {unit} ago"
CATCHUP_HEADER = "**Catch-up — [{topic}]({link})**: {count} messages since {since}."
CATCHUP_DM_HEADER = "**Catch-up** across {sessions} of your sessions, busiest first."
CATCHUP_MORE = "_…and {more} more sessions with news: run `!catchup` in each._"
CATCHUP_NO_MODEL = "No model answered, so here are the messages that matter most:"
CATCHUP_LINE = "- **{name}**: {text} — [link]({link})"

# Documents (bot.documents)
DOC_READING = "📄 Reading **{name}** — {done}/{total} {unit}…"
DOC_READ = "📄 Read **{name}**{pages}: {pieces} in memory{extra}."
DOC_READ_PAGES = " ({pages} pages)"
DOC_READ_REPLACED = ", replacing the earlier version"
DOC_READ_EMPTY_PAGES = "; {empty} of {pages} pages had no text (scanned?) and were left out"
DOC_SKIPPED = "📄 I did not read **{name}**: {reason}"
DOC_WHY_UNSUPPORTED = (
    "I read PDF, Word (.docx), Markdown, text, CSV, HTML and code files, not {what}."
)
DOC_WHY_BINARY = "it is not a text file."
DOC_WHY_BROKEN = "the file is damaged or not what its name says ({error})."
DOC_WHY_PROTECTED = "it is password-protected. Share a copy without a password to have it read."
DOC_WHY_TOO_BIG = "it is {size}, over the {limit} limit for documents (`documents.max_bytes`)."
DOC_WHY_TOO_MANY_PAGES = (
    "it has {pages} pages, over the {limit}-page limit for documents (`documents.max_pages`)."
)
DOC_WHY_TOO_MUCH_TEXT = (
    "it holds {chars:,} characters of text, over the {limit:,} limit (`documents.max_chars`)."
)
DOC_WHY_UNPACKED = "it unpacks to more than a document should; it may be a zip bomb."
DOC_WHY_MEMORY = "reading it took more memory than a document should."
DOC_WHY_NO_TEXT = (
    "it has no text to read — it looks like a scan or only images. Share a version with text "
    "(or run it through OCR)."
)
DOC_WHY_SLOW = "reading it took longer than {seconds:g} s (`documents.read_timeout`)."
DOC_WHY_UNDECRYPTABLE = "its encrypted file could not be decrypted with the key in its message."
DOC_WHY_GONE = "the homeserver no longer has the file ({error})."
DOC_WHY_NOT_MEMBER = "only members of the workspace **{workspace}** add documents to its memory."
DOC_WHY_ATTEMPTS = "reading it failed {attempts} times; the log says why."
DOCS_HEADER = "**Documents of {name}** ({count}), newest first:"
DOCS_LINE = "- `{id}` [{doc}]({link}) — {who}, {when}: {state}"
DOCS_STATE_DONE = "{pieces} pieces"
DOCS_STATE_DONE_PAGES = "{pages} pages, {pieces} pieces"
DOCS_STATE_WAITING = "waiting to be read"
DOCS_STATE_READING = "being read"
DOCS_STATE_SKIPPED = "not read: {reason}"
DOCS_NONE = (
    "No documents in **{name}** yet. Share a file (PDF, Word, Markdown, text, CSV, HTML, code) "
    "in a session and I will read it."
)
DOCS_MORE = "…and {more} more."
DOCS_FORGET_HINT = "`!forget dN` (the host, or whoever shared it) removes one from memory."
DOC_FORGOTTEN = "Forgot the document **{name}** ({pieces} pieces)."
DOC_UNKNOWN = "There is no document `{id}` in this workspace: `!docs` lists them."
