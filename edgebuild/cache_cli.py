"""`edgebuild-cache`: look after the step cache.

    edgebuild-cache ls                             steps, keys, sizes, last use (least recently used first)
    edgebuild-cache verify                         check every entry against its manifest; exit 1 naming bad ones
    edgebuild-cache gc --max-size 2GB              remove least recently used entries until under the size
    edgebuild-cache gc --older-than 30d            remove entries unused for 30 days
    edgebuild-cache --cache-dir DIR ...            another cache (default: $EDGEBUILD_CACHE, else ~/.cache/edgebuild)

gc never removes an entry whose lock a running build holds; temp dirs of builds whose process is gone go at once.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edgebuild.errors import EdgebuildError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgebuild-cache", description=__doc__.split("\n")[0])
    p.add_argument("--cache-dir", help="the cache (default: $EDGEBUILD_CACHE, else ~/.cache/edgebuild)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", help="list entries: step, key, size, last use")
    sub.add_parser("verify", help="check every entry's files against its manifest")
    g = sub.add_parser("gc", help="remove least recently used entries")
    g.add_argument("--max-size", help="keep the entries under this size, e.g. 2GB, 500MB")
    g.add_argument("--older-than", help="remove entries unused for this long, e.g. 30d, 12h")
    g.add_argument("--dry-run", action="store_true", help="say what would be removed")
    return p


def run(argv: list[str]) -> int:
    from edgebuild.cache import Cache, cache_root
    from edgebuild.cache_gc import gc, human, parse_age, parse_size, scan, verify_all

    args = _parser().parse_args(argv)
    max_size = parse_size(args.max_size) if getattr(args, "max_size", None) is not None else None
    older = parse_age(args.older_than) if getattr(args, "older_than", None) is not None else None
    root = Path(args.cache_dir).expanduser().resolve() if args.cache_dir else cache_root()
    if not root.is_dir():
        raise EdgebuildError("--cache-dir", f"{root} is not a directory.",
                             "give the cache of an earlier build (build.cache_dir, $EDGEBUILD_CACHE).")
    cache = Cache(root)
    now = time.time()
    if args.command == "ls":
        entries = scan(cache)
        print(f"{'step':<17} {'key':<12} {'size':>10}  last use")
        for e in entries:
            print(f"{e.kind:<17} {e.key[:12]} {human(e.size):>10}  {_ago(now - e.last_used)}")
        print(f"{len(entries)} entries, {human(sum(e.size for e in entries))} in {root}")
        return 0
    if args.command == "verify":
        n, bad = verify_all(cache)
        for e in bad:
            print(f"bad: {e.kind} {e.key} ({e.path}): files do not match its manifest", file=sys.stderr)
        print(f"{n} entries checked, {len(bad)} bad" + (" (the next build that needs one moves it aside and "
                                                         "rebuilds it)" if bad else ""))
        return 1 if bad else 0
    if max_size is None and older is None:
        raise EdgebuildError("edgebuild-cache gc", "needs a limit.", "give --max-size (e.g. 2GB) and/or --older-than "
                             "(e.g. 30d).")
    r = gc(cache, max_size, older, dry_run=args.dry_run, now=now)
    verb = "would remove" if args.dry_run else "removed"
    for e in r.removed:
        print(f"{verb} {e.kind} {e.key[:12]} {human(e.size)} (last used {_ago(now - e.last_used)})")
    for e in r.held:
        print(f"kept {e.kind} {e.key[:12]}: a running build holds it")
    print(f"{verb} {len(r.removed)} entries and {r.temp_removed} dead temp dirs ({human(r.freed)}); "
          f"{len(r.kept)} entries, {human(sum(e.size for e in r.kept))} left")
    return 0


def _ago(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return f"{seconds / n:.0f}{unit} ago"
    return "just now"


def main(argv: list[str] | None = None) -> None:
    try:
        sys.exit(run(list(sys.argv[1:] if argv is None else argv)))
    except EdgebuildError as e:
        print(e.paragraph(), file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
