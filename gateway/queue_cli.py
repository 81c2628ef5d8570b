"""`ash-gateway`'s queue flags (each with its ASH_QUEUE_* environment equivalent)."""

from __future__ import annotations

import argparse
import os

from gateway.queue import QueueSettings

MAX_CONCURRENCY = 64
MAX_RETRY_SECONDS = 86400.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    defaults = QueueSettings()
    parser.add_argument("--queue-concurrency", type=int,
                        default=int(env("ASH_QUEUE_CONCURRENCY", str(defaults.concurrency))),
                        help="queued prompts processed at once, 0 to process none "
                        f"(ASH_QUEUE_CONCURRENCY, default {defaults.concurrency})")
    parser.add_argument("--queue-retry-base", type=float,
                        default=float(env("ASH_QUEUE_RETRY_BASE", str(defaults.retry_base))),
                        help="seconds before a failed item's first retry, doubling with each "
                        f"(ASH_QUEUE_RETRY_BASE, default {defaults.retry_base:g})")
    parser.add_argument("--queue-retry-cap", type=float,
                        default=float(env("ASH_QUEUE_RETRY_CAP", str(defaults.retry_cap))),
                        help="the longest wait before a retry, in seconds "
                        f"(ASH_QUEUE_RETRY_CAP, default {defaults.retry_cap:g})")
    parser.add_argument("--queue-max-pending", type=int,
                        default=int(env("ASH_QUEUE_MAX_PENDING", str(defaults.max_pending))),
                        help="pending items a tenant may have; beyond, an enqueue is a 429 "
                        f"(ASH_QUEUE_MAX_PENDING, default {defaults.max_pending})")


def settings_from_args(args: argparse.Namespace,
                       parser: argparse.ArgumentParser) -> QueueSettings:
    if not 0 <= args.queue_concurrency <= MAX_CONCURRENCY:
        parser.error(f"--queue-concurrency must be between 0 and {MAX_CONCURRENCY}")
    for flag, value in (("--queue-retry-base", args.queue_retry_base),
                        ("--queue-retry-cap", args.queue_retry_cap)):
        if not 0 < value <= MAX_RETRY_SECONDS:
            parser.error(f"{flag} must be a number of seconds in (0, {MAX_RETRY_SECONDS:g}]")
    if args.queue_retry_cap < args.queue_retry_base:
        parser.error("--queue-retry-cap must be at least --queue-retry-base")
    if args.queue_max_pending < 1:
        parser.error("--queue-max-pending must be at least 1")
    return QueueSettings(concurrency=args.queue_concurrency,
                         retry_base=args.queue_retry_base, retry_cap=args.queue_retry_cap,
                         max_pending=args.queue_max_pending)
