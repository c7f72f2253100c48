"""The embedded micro world: a tiny LLM and a tiny LLaVA tuned from it, trained here on CPU, in
which visual instruction tuning really causes forgetting (see docs/micro.md)."""

from harness.micro.build import ensure_pair

__all__ = ["ensure_pair"]
