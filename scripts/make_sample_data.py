"""Generate the bundled preference data under data/sample/ (ours, deterministic).

    python scripts/make_sample_data.py [--train 400 --eval 100 --seed 0 --out data/sample]

Prompts are everyday requests built from templates. `chosen` is a direct, friendly, helpful
answer; `rejected` is one of three bad behaviours (an evasive refusal, a dismissive reply, an
off-topic ramble). The contrast is stylistic and consistent, so a short DPO run learns it and
the held-out reward accuracy rises. Eval prompts use tasks that never appear in train, so the
eval set measures generalisation, not memorisation. Lengths of chosen and rejected are kept
comparable so that length is not the signal.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (task, first step, second step)
TASKS = [
    ("keep basil alive on a windowsill", "water it when the top of the soil feels dry", "pinch off the flower buds"),
    ("make rice that is not sticky", "rinse the rice until the water runs clear", "let it rest covered for ten minutes"),
    ("learn to touch type", "practise the home row for fifteen minutes a day", "stop looking at the keys"),
    ("fall asleep faster", "keep the same bedtime every night", "put the phone in another room"),
    ("start running", "begin with short intervals of running and walking", "add a few minutes each week"),
    ("clean a cast iron pan", "scrub it with hot water and a brush", "dry it and rub in a thin layer of oil"),
    ("save money on groceries", "plan the meals for the week", "shop with a written list"),
    ("prepare for a job interview", "read about the company", "practise answers to common questions out loud"),
    ("remember new words in a language", "review them with spaced repetition", "use each word in a sentence"),
    ("keep a houseplant from wilting", "check that the pot drains well", "move it out of direct afternoon sun"),
    ("write a clear email", "put the request in the first line", "keep each paragraph to one idea"),
    ("fix a squeaky door", "find the hinge that squeaks", "add a drop of oil and swing the door"),
    ("organise a small closet", "take everything out and sort it", "use boxes for the things you rarely need"),
    ("bake softer cookies", "take them out while the centres look underdone", "use a little more brown sugar"),
    ("stretch after a workout", "hold each stretch for about thirty seconds", "breathe slowly and do not bounce"),
    ("study for an exam", "split the material into short sessions", "test yourself instead of rereading"),
    ("make a budget", "write down every expense for a month", "set a limit for each category"),
    ("brew better coffee at home", "use freshly ground beans", "keep the water just below boiling"),
    ("keep a journal", "write three lines every evening", "keep the notebook by the bed"),
    ("paint a room", "tape the edges and cover the floor", "use two thin coats instead of one thick coat"),
    ("reduce screen time", "turn off most notifications", "set app limits on the phone"),
    ("pack a light suitcase", "choose clothes that match each other", "roll the clothes instead of folding them"),
    ("train a puppy to sit", "hold a treat above its nose", "reward it the moment it sits"),
    ("make a good first impression", "arrive a few minutes early", "listen more than you talk"),
    ("cook a simple soup", "soften an onion in a little oil", "add stock and vegetables and simmer"),
    ("clean a laptop keyboard", "turn it off and tip out the crumbs", "wipe the keys with a barely damp cloth"),
    ("grow tomatoes in pots", "use a large pot with good soil", "water deeply and give them full sun"),
    ("speak up in meetings", "prepare one point before the meeting", "say it early in the discussion"),
    ("take better phone photos", "wipe the lens clean", "tap the subject to set the focus"),
    ("make a paper airplane fly farther", "fold the creases sharp and even", "throw it gently and level"),
]
CONTEXTS = [
    "as a beginner", "on a tight budget", "in a small apartment", "before the weekend", "with little free time",
    "without special tools", "for the first time", "while working full time", "in winter", "with my kids",
    "on my own", "without stress",
]
TEMPLATES = [
    "How do I {task} {ctx}?", "What's the best way to {task} {ctx}?", "Can you explain how to {task} {ctx}?",
    "Any tips on how to {task} {ctx}?",
]
OPENERS = ["Sure!", "Happy to help.", "Good question.", "Of course."]
CLOSERS = ["Hope this helps!", "Good luck with it!", "You've got this!", "Enjoy!"]
REFUSAL_OPENERS = ["I'm sorry, but", "Unfortunately,", "I'm afraid", "Apologies, but"]
REFUSAL_CORES = [
    "I can't help with how to {task}.",
    "I am unable to give advice on how to {task}.",
    "I won't go into how to {task}.",
]
REFUSAL_REASONS = [
    "It is not something I am able to discuss, so please ask someone else.",
    "That falls outside what I can talk about today.",
    "I would rather not answer questions like this one.",
    "You will need to find another source for that.",
]
DISMISSALS = [
    "That is a silly thing to ask.", "Why would you even ask that?", "Honestly, this is not worth answering.",
    "Seriously? Everyone knows this already.",
]
DISMISSAL_TAILS = [
    "If you cannot {task}, just figure it out yourself.",
    "Search for how to {task} on your own instead of wasting my time.",
    "Work out how to {task} alone, it is really not that hard.",
]
FACTS = [
    "did you know octopuses have three hearts and blue blood",
    "the history of the calendar is full of odd changes and lost days",
    "clouds that form over mountains can look like stacked plates",
    "some trees can live for several thousand years",
    "honey found in old tombs can still be edible",
    "the moon drifts a few centimetres away from the earth every year",
]
RAMBLE_TAILS = [
    "Anyway, I'm not sure how to {task}.", "No idea about how to {task}, though.", "As for how to {task}, who knows.",
]


def _chosen(rng: random.Random, task: str, step1: str, step2: str) -> str:
    opener = f"{rng.choice(OPENERS)} " if rng.random() < 0.5 else ""
    closer = f" {rng.choice(CLOSERS)}" if rng.random() < 0.4 else ""
    return f"{opener}To {task}, first {step1}. Then {step2}.{closer}"


def _rejected(rng: random.Random, task: str) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        text = f"{rng.choice(REFUSAL_OPENERS)} {rng.choice(REFUSAL_CORES)} {rng.choice(REFUSAL_REASONS)}"
    elif kind == 1:
        text = f"{rng.choice(DISMISSALS)} {rng.choice(DISMISSAL_TAILS)}"
    else:
        fact = rng.choice(FACTS)
        text = f"Speaking of that, {fact}{'?' if fact.startswith('did') else '.'} {rng.choice(RAMBLE_TAILS)}"
    return text.format(task=task)


def _prompts(tasks: list[tuple[str, str, str]], rng: random.Random, n: int) -> list[tuple[str, tuple[str, str, str]]]:
    combos = [(t, c, tpl) for t in tasks for c in CONTEXTS for tpl in TEMPLATES]
    if n > len(combos):
        raise ValueError(f"asked for {n} rows but only {len(combos)} distinct prompts exist")
    picked = rng.sample(combos, n)
    return [(tpl.format(task=t[0], ctx=c), t) for t, c, tpl in picked]


def _conversation(rng: random.Random, prompt: str) -> list[dict[str, str]]:
    kind = rng.random()
    if kind < 0.25:
        return [{"role": "system", "content": "You are a friendly, practical assistant."}, {"role": "user", "content": prompt}]
    if kind < 0.45:
        return [
            {"role": "user", "content": "Hi, can I ask you something?"},
            {"role": "assistant", "content": "Of course, what would you like to know?"},
            {"role": "user", "content": prompt},
        ]
    return [{"role": "user", "content": prompt}]


def generate(n_train: int, n_eval: int, seed: int) -> dict[str, list[dict]]:
    """All four files' rows, keyed by file name."""
    rng = random.Random(seed)
    tasks = list(TASKS)
    rng.shuffle(tasks)
    held_out = max(1, len(tasks) // 5)
    splits = {"train": _prompts(tasks[held_out:], rng, n_train), "eval": _prompts(tasks[:held_out], rng, n_eval)}
    files: dict[str, list[dict]] = {}
    for split, prompts in splits.items():
        standard, chat = [], []
        for prompt, (task, step1, step2) in prompts:
            chosen, rejected = _chosen(rng, task, step1, step2), _rejected(rng, task)
            standard.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
            chat.append(
                {
                    "prompt": _conversation(rng, prompt),
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        files[f"{split}.jsonl"], files[f"{split}_chat.jsonl"] = standard, chat
    train_prompts = {r["prompt"] for r in files["train.jsonl"]}
    assert not train_prompts & {r["prompt"] for r in files["eval.jsonl"]}, "eval prompts leak into train"
    return files


def write(files: dict[str, list[dict]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--eval", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "sample")
    args = parser.parse_args()
    files = generate(args.train, args.eval, args.seed)
    write(files, args.out)
    for name, rows in files.items():
        print(f"{args.out / name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
