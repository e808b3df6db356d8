"""Read models folded deterministically from a platform's canonical events.

`fold.PlatformFold` is the one fold; `balances`, `statements` and `explain`
shape its figures into the JSON the CLI, the HTTP API and auditors read.
This package never imports `ledger` (the shell): it only sees event objects.
"""
