"""What the offline verifiers report: named checks that pass or fail, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.audit.signing import key_id, signature_valid


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    seq: int | None = None

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.name, "ok": self.ok, "detail": self.detail}
        if self.seq is not None:
            out["seq"] = self.seq
        return out


def signature_checks(label: str, checkpoint: dict[str, Any], public_key: Any) -> list[Check]:
    expected = key_id(public_key)
    checks = [Check(f"{label} key id", checkpoint["key_id"] == expected,
                    f"checkpoint names key {checkpoint['key_id']}, the public key is {expected}")]
    ok = signature_valid(checkpoint, public_key)
    checks.append(Check(f"{label} signature", ok, "Ed25519 signature over the checkpoint's canonical bytes "
                                                  + ("verifies" if ok else "does not verify")))
    return checks
