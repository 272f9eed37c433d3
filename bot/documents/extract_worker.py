"""`python -m bot.documents.extract_worker '{"name": …, "mimetype": …, "max_pages": …,
"max_chars": …}' < FILE`: the file's text as JSON on stdout.

Parsing a file someone posted runs here, apart from the bot: at the lowest CPU priority (the
bot and Synapse go first), with its address space capped (a decompression bomb ends this
process with a MemoryError, not the machine), and killed by the parent after
documents.read_timeout. Output: {"ok": true, "format", "pages", "empty_pages", "sections":
[{"place", "text", "page"}]} or {"ok": false, "why", "detail"}.
"""

from __future__ import annotations

import json
import os
import resource
import sys

from bot.documents.extract import Unreadable, extract

MEMORY_LIMIT = 2 * 1024**3


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    os.nice(19)
    args = json.loads(sys.argv[1])
    data = sys.stdin.buffer.read()
    try:
        result = extract(
            data,
            str(args["name"]),
            args.get("mimetype"),
            max_pages=int(args["max_pages"]),
            max_chars=int(args["max_chars"]),
        )
        out: dict[str, object] = {
            "ok": True,
            "format": result.format,
            "pages": result.pages,
            "empty_pages": result.empty_pages,
            "sections": [
                {"place": s.place, "text": s.text, "page": s.page} for s in result.sections
            ],
        }
    except Unreadable as e:
        out = {"ok": False, "why": e.why, "detail": e.detail}
    except MemoryError:
        out = {"ok": False, "why": "too_large", "detail": {"memory": True}}
    except RecursionError:
        out = {"ok": False, "why": "broken", "detail": {"error": "RecursionError"}}
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
