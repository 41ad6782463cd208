"""Judges that say which of two responses to a prompt is better.

Each judge is a callable `judge(prompt, response_a, response_b) -> (verdict, raw_reply)`,
verdict `"A"`, `"B"`, `"tie"`, or None when the reply could not be parsed (counted as a
tie and reported, never a crash). Position swapping lives in `winrate`, not here.

The endpoint judge uses the official `openai` client (installed with `transformers[serving]`):
it speaks every OpenAI-compatible server (vLLM, TGI, `transformers serve`, hosted APIs) and
already retries connection errors, timeouts, 408/409/429 and 5xx replies with exponential
backoff and jitter, so no retry loop of our own is needed.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from dpo_cli.errors import EXIT_USAGE, DpoError

if TYPE_CHECKING:
    from dpo_cli.config.schema import JudgeSection

RUBRIC = """You are judging two answers to the same user request. Prefer the answer that is more \
helpful, correct and respectful, and that answers what was asked. Do not prefer an answer for \
being longer, for flattering the user, or for its position.

[User request]
{prompt}

[Answer A]
{a}

[Answer B]
{b}

Which answer is better? Reply with one line only: "Verdict: A", "Verdict: B" or "Verdict: tie"."""

_VERDICT_RE = re.compile(r"verdict\s*[:=\-]?\s*[\*\[\(\"']*\s*(A|B|tie)\b", re.IGNORECASE)
_BARE_RE = re.compile(r"^[\s\*\[\(\"']*(A|B|tie)[\s\*\]\)\"'.!]*$", re.IGNORECASE)


def parse_verdict(reply: str) -> str | None:
    """`"A"`, `"B"` or `"tie"` from a judge's reply, or None when it names none of them.

    The last `Verdict: X` wins (models sometimes restate the question first); a reply that is
    only the letter is accepted too.
    """
    found = _VERDICT_RE.findall(reply)
    token = found[-1] if found else None
    if token is None:
        bare = _BARE_RE.match(reply)
        token = bare.group(1) if bare else None
    if token is None:
        return None
    return "tie" if token.lower() == "tie" else token.upper()


def rubric_prompt(prompt: str, a: str, b: str) -> str:
    return RUBRIC.format(prompt=prompt.strip(), a=a.strip(), b=b.strip())


# A header value as servers echo it back: `Authorization: Bearer sk-...`, `"authorization": "..."`,
# `api-key=...`; the name and separator are kept, the value is not.
_SECRET_HEADER_RE = re.compile(
    r"""(?P<name>\b(?:proxy-)?authorization|\bx-api-key|\bapi[-_]key)(?P<sep>["']?\s*[:=]\s*["']?)"""
    r"""(?P<value>(?:bearer|basic|token)\s+[^\s"',;}\]]+|[^\s"',;}\]]+)""",
    re.IGNORECASE,
)
_BEARER_RE = re.compile(r"\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)
REDACTED = "[redacted]"


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with every secret, and every `Authorization`/API-key header value, replaced by `[redacted]`."""
    text = _SECRET_HEADER_RE.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)
    text = _BEARER_RE.sub(lambda m: f"{m[1]} {REDACTED}", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class ChatEndpoint:
    """An OpenAI-compatible chat endpoint, with its failures turned into messages naming the config keys.

    The API key is read from the environment variable the config names, held only in the
    client object, and never written to disk or printed. Whatever the server sends back (an
    error body, a reply) is scrubbed of the key and of `Authorization` values first: a
    misconfigured proxy or a hostile server that echoes request headers must not put the key
    on the terminal or into `judgements.jsonl`.
    """

    def __init__(self, section: Any, *, key: str, role: str):
        """`section` has base_url, model, api_key_env, max_retries and timeout; `key` is its dotted config path."""
        from openai import OpenAI

        self.base_url = section.base_url
        self.model = section.model
        self.retries = section.max_retries
        self.key, self.role = key, role
        api_key = "unused"  # the client insists on a key; servers without authentication ignore it
        if section.api_key_env:
            api_key = os.environ.get(section.api_key_env, "")
            if not api_key:
                raise DpoError(
                    f"{key}.api_key_env: environment variable `{section.api_key_env}` is not set or empty",
                    exit_code=EXIT_USAGE,
                    details=[f"export {section.api_key_env}=... first"],
                )
        self.api_key_env = section.api_key_env
        # Too short a "key" would scrub ordinary words; header values are caught by pattern anyway.
        self._secrets = (api_key,) if section.api_key_env and len(api_key) >= 4 else ()
        self.client = OpenAI(
            base_url=section.base_url, api_key=api_key, max_retries=section.max_retries, timeout=section.timeout
        )

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, **sampling: Any) -> tuple[str, bool]:
        """The reply's text, and whether the model finished it (rather than running out of tokens)."""
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=max_tokens, **sampling
            )
        except openai.APIConnectionError as exc:  # includes timeouts, after the client's retries
            raise DpoError(
                f"{self.role} endpoint {self.base_url} is unreachable after {self.retries} retries: "
                f"{type(exc).__name__}: {self._scrub(str(exc))}",
                details=[f"check {self.key}.base_url and that the server is running"],
            ) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            where = f"the key in ${self.api_key_env}" if self.api_key_env else f"no key ({self.key}.api_key_env unset)"
            raise DpoError(
                f"{self.role} endpoint {self.base_url} refused {where}: HTTP {exc.status_code}", exit_code=EXIT_USAGE
            ) from None
        except openai.APIStatusError as exc:
            raise DpoError(
                f"{self.role} endpoint {self.base_url} answered HTTP {exc.status_code} for model `{self.model}`"
                f"{' after ' + str(self.retries) + ' retries' if exc.status_code >= 500 or exc.status_code == 429 else ''}"
                f": {_short(self._scrub(str(exc.message)))}",
                details=[f"check {self.key}.model and {self.key}.base_url"],
            ) from None
        choices = getattr(response, "choices", None) or []
        if not choices:
            return "", False
        return self._scrub(choices[0].message.content or ""), choices[0].finish_reason == "stop"

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)


class EndpointJudge:
    """An OpenAI-compatible chat endpoint answering the rubric prompt, decoded greedily."""

    def __init__(self, section: JudgeSection):
        self.endpoint = ChatEndpoint(section, key="eval.judge", role="judge")
        self.max_new_tokens = section.max_new_tokens

    def check(self) -> None:
        """One short call, so that a dead endpoint stops the run before any generation."""
        self._complete("Reply with the single word: ready", max_tokens=1)

    def __call__(self, prompt: str, a: str, b: str) -> tuple[str | None, str]:
        reply = self._complete(rubric_prompt(prompt, a, b), max_tokens=self.max_new_tokens)
        return parse_verdict(reply), reply

    def _complete(self, content: str, max_tokens: int) -> str:
        return self.endpoint.complete([{"role": "user", "content": content}], max_tokens=max_tokens, temperature=0.0)[0]


class RewardModelJudge:
    """A local sequence-classification reward model: the higher-scored response wins.

    Scores do not depend on the order the pair is shown in, so both orders always agree
    (the swap in `winrate` is a no-op for it, kept so every judge goes through one path).
    """

    def __init__(self, section: JudgeSection):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = _local_dir(section.path, "eval.judge.path")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path)
        if self.model.config.num_labels != 1:
            raise DpoError(
                f"eval.judge.path: {path}: a reward model has one output (num_labels 1), this one has "
                f"{self.model.config.num_labels}",
                exit_code=EXIT_USAGE,
            )
        if self.model.config.pad_token_id is None and self.tokenizer.pad_token_id is not None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self._cache: dict[tuple[str, str], float] = {}

    def check(self) -> None:
        """Nothing to reach: the model loaded."""

    def score(self, prompt: str, response: str) -> float:
        import torch

        key = (prompt, response)
        if key not in self._cache:
            if self.tokenizer.chat_template:
                messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
                text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            else:
                text = f"{prompt}\n{response}"
            limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(
                self.model.config, "n_positions", 2048
            )
            inputs = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=limit)
            with torch.no_grad():
                self._cache[key] = float(self.model(**inputs).logits[0, 0])
        return self._cache[key]

    def __call__(self, prompt: str, a: str, b: str) -> tuple[str | None, str]:
        sa, sb = self.score(prompt, a), self.score(prompt, b)
        verdict = "A" if sa > sb else "B" if sb > sa else "tie"
        return verdict, f"score A {sa:.4f}, score B {sb:.4f}"


class LlmJudge:
    """A local causal LM answering the rubric prompt, decoded greedily."""

    def __init__(self, section: JudgeSection):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = _local_dir(section.path, "eval.judge.path")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path)
        self.model.eval()
        self.max_new_tokens = section.max_new_tokens

    def check(self) -> None:
        """Nothing to reach: the model loaded."""

    def __call__(self, prompt: str, a: str, b: str) -> tuple[str | None, str]:
        import torch

        content = rubric_prompt(prompt, a, b)
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = content + "\n"
        inputs = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        reply = self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return parse_verdict(reply), reply


def make_judge(section: JudgeSection) -> Any:
    """The judge the config asks for, ready to call."""
    kinds = {"endpoint": EndpointJudge, "reward_model": RewardModelJudge, "llm": LlmJudge}
    return kinds[section.kind](section)


def describe(section: JudgeSection) -> str:
    """One line naming the judge, without secrets."""
    if section.kind == "endpoint":
        return f"endpoint {section.base_url} model {section.model}"
    return f"{section.kind} {section.path}"


def _local_dir(path: str | None, key: str) -> str:
    from pathlib import Path

    if not path or not Path(path).is_dir():
        raise DpoError(f"{key}: {path}: not a local model directory", exit_code=EXIT_USAGE)
    return path


def _short(text: Any, limit: int = 200) -> str:
    text = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return text[:limit]
