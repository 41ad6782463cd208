"""Token-level checks with the run's tokenizer and chat template, the way TRL 1.16 prepares data.

`DPOTrainer._prepare_dataset` appends EOS to standard responses, tokenizes the prompt alone
(with the generation prompt for conversations) and prompt+response, and starts the response
where the two token sequences diverge. Its collator then cuts each prompt+response to
`max_length` (`keep_start` keeps the beginning, `keep_end` the end), and with `keep_start` it
drops rows whose prompt alone fills `max_length`. The checks below replay exactly that, in
batches through the fast tokenizer's batch call.

This module is imported only when a tokenizer is in use: nothing here loads torch by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dpo_cli.data.rows import common_prefix_len


@dataclass
class TokenResult:
    """What TRL would make of one pair."""

    prompt: int = 0
    chosen: int = 0
    rejected: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


class TokenChecker:
    """Tokenize pairs like TRL and flag truncation and template problems.

    Args:
        tokenizer: The run's tokenizer (chat template already applied, as `load_tokenizer` does).
        max_length: `training.max_length`; None means no truncation.
        truncation_mode: `keep_start` (TRL's default) or `keep_end`.
    """

    def __init__(self, tokenizer: Any, max_length: int | None, truncation_mode: str = "keep_start"):
        if truncation_mode not in ("keep_start", "keep_end"):
            raise ValueError(f"truncation_mode must be keep_start or keep_end, not {truncation_mode!r}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.mode = truncation_mode
        self.eos = tokenizer.eos_token or ""
        # Rust backend of a fast tokenizer, used directly once it has matched the wrapper's output.
        self._backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
        self._verified: set[bool] = set()

    def check(self, pairs: list[tuple[Any, Any, Any]], conversational: bool) -> list[TokenResult]:
        """Check a batch of (prompt, chosen, rejected) triples of one format."""
        if not pairs:
            return []
        if conversational:
            return self._check_conversations(pairs)
        eos = self.eos
        prompts = [p for p, _, _ in pairs]
        chosen = [p + (c if c.endswith(eos) else c + eos) for p, c, _ in pairs]
        rejected = [p + (r if r.endswith(eos) else r + eos) for p, _, r in pairs]
        # One batch call over all three lists: the Rust tokenizer spreads it over the cores.
        ids = self._encode(prompts + chosen + rejected, add_special_tokens=True)
        n = len(pairs)
        return [self._measure(ids[i], ids[n + i], ids[2 * n + i]) for i in range(n)]

    def _check_conversations(self, pairs: list[tuple[Any, Any, Any]]) -> list[TokenResult]:
        try:
            prompt_ids = self._chat([p for p, _, _ in pairs], generation_prompt=True)
            chosen_ids = self._chat([p + c for p, c, _ in pairs])
            rejected_ids = self._chat([p + r for p, _, r in pairs])
        except Exception:  # noqa: BLE001 - a template that raises (e.g. on role order) fails the whole batch
            return [self._one_conversation(pair) for pair in pairs]
        return [self._measure(p, c, r) for p, c, r in zip(prompt_ids, chosen_ids, rejected_ids)]

    def _one_conversation(self, pair: tuple[Any, Any, Any]) -> TokenResult:
        try:
            [p] = self._chat([pair[0]], generation_prompt=True)
            [c] = self._chat([pair[0] + pair[1]])
            [r] = self._chat([pair[0] + pair[2]])
        except Exception as exc:  # noqa: BLE001 - Jinja's TemplateError and the template's own raise_exception
            message = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            return TokenResult(problems=[("bad_conversation", f"chat template: {message}")])
        return self._measure(p, c, r)

    def _chat(self, conversations: list[list[dict]], generation_prompt: bool = False) -> list[list[int]]:
        # What `apply_chat_template(tokenize=True)`, which TRL calls per row, does: render the
        # template, then tokenize the text without adding special tokens. Here in one batch.
        texts = self.tokenizer.apply_chat_template(
            conversations, add_generation_prompt=generation_prompt, tokenize=False
        )
        return self._encode(texts, add_special_tokens=False)

    def _encode(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        """Token ids as `tokenizer(texts)` gives them, through the Rust backend when that is identical.

        The wrapper converts each encoding into Python objects it then discards (about a fifth
        of the time on 100k pairs); the backend's `encode_batch_fast` skips offsets. The first
        batch runs both ways and the backend is used only if every row matches.
        """
        if self._backend is None:
            return self.tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
        if add_special_tokens not in self._verified:
            expected = self.tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
            got = [e.ids for e in self._backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]
            if got != expected:
                self._backend = None
            self._verified.add(add_special_tokens)
            return expected
        return [e.ids for e in self._backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]

    def _measure(self, prompt: list[int], with_chosen: list[int], with_rejected: list[int]) -> TokenResult:
        shared = min(common_prefix_len(prompt, with_chosen), common_prefix_len(prompt, with_rejected))
        result = TokenResult(prompt=shared, chosen=len(with_chosen) - shared, rejected=len(with_rejected) - shared)
        if shared < len(prompt):
            result.problems.append(("template_mismatch", f"prompt has {len(prompt)} tokens, {shared} shared"))
        if not result.chosen or not result.rejected:
            result.problems.append(("response_cut_off", "a response has no tokens after the prompt"))
            return result
        limit = self.max_length
        if limit is None:
            return result
        if self.mode == "keep_start":
            if shared >= limit:
                result.problems.append(("response_cut_off", f"prompt alone is {shared} tokens, max_length {limit}"))
                return result
            cut_chosen, cut_rejected = with_chosen[:limit], with_rejected[:limit]
        else:
            cut_chosen, cut_rejected = with_chosen[-limit:], with_rejected[-limit:]
        longest = len(max(with_chosen, with_rejected, key=len))
        if longest > limit:
            result.problems.append(("truncated", f"{longest} tokens, max_length {limit}"))
            if cut_chosen == cut_rejected:
                result.problems.append(("identical_after_truncation", "they differ only in the part max_length cuts"))
        return result
