"""Generate the bundled preference data under data/sample/ (ours, deterministic).

    python scripts/make_sample_data.py [--train 400 --eval 100 --seed 0 --out data/sample]

Prompts are everyday requests built from templates: how-to questions, requests for advice,
small sums and simple factual questions. `chosen` is a direct, polite, helpful answer in one
consistent style; `rejected` is one of a few bad behaviours with recognisable wording (an
evasive refusal, a dismissive reply, an off-topic ramble, or a careless wrong answer to a sum
or a fact). The contrast is stylistic and consistent, so a short DPO run learns it and the
held-out reward accuracy rises. Eval prompts are about tasks, situations, facts and operand
pairs that never appear in train, so the eval set measures generalisation, not memorisation.
Chosen and rejected have comparable lengths, so length is not the signal.
"""

from __future__ import annotations

import argparse
import json
import random
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# How-to questions: (task, first step, second step).
TASKS = [
    ("keep basil alive on a windowsill", "water it when the top of the soil feels dry", "pinch off the flower buds"),
    (
        "make rice that is not sticky",
        "rinse the rice until the water runs clear",
        "let it rest covered for ten minutes",
    ),
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
    "as a beginner",
    "on a tight budget",
    "in a small apartment",
    "before the weekend",
    "with little free time",
    "without special tools",
    "for the first time",
    "while working full time",
    "in winter",
    "with my kids",
    "on my own",
    "without stress",
]
HOWTO_TEMPLATES = [
    "How do I {task} {ctx}?",
    "What's the best way to {task} {ctx}?",
    "Can you explain how to {task} {ctx}?",
    "Any tips on how to {task} {ctx}?",
]
# Requests for advice: (situation, first tip, second tip).
ADVICE = [
    ("before a presentation", "rehearse the first minute until it feels easy", "breathe out slowly before you start"),
    ("before a first date", "pick a place where you feel comfortable", "ask questions and really listen"),
    ("about moving to a new city", "explore one new street every week", "join a club that meets regularly"),
    ("when my inbox is full", "answer the quick emails first", "set two fixed times a day for email"),
    ("before a driving test", "practise the manoeuvres on quiet roads", "get a good night of sleep before it"),
    ("about starting a new job", "write down names and questions as you go", "ask for feedback after the first week"),
    ("when a deadline is close", "list what is left and cut what is optional", "work in short focused blocks"),
    (
        "about speaking a new language",
        "start with short, simple sentences",
        "accept that mistakes are part of learning",
    ),
    (
        "about a hard conversation with a friend",
        "choose a calm moment to talk",
        "describe how you feel without blaming",
    ),
    ("before a long flight", "walk around the cabin now and then", "drink water and skip the extra coffee"),
    ("about cooking for guests", "pick a dish you have made before", "prepare as much as you can the day before"),
    ("about keeping a new habit", "tie it to something you already do daily", "track it on a simple calendar"),
    ("when my room is a mess", "tidy for ten minutes at a time", "give every item one fixed place"),
    ("about asking for a raise", "write down what you achieved this year", "ask for a meeting instead of a quick chat"),
    ("before a dentist visit", "tell the dentist that you feel nervous", "agree on a hand signal to pause"),
    ("about running my first race", "start slower than you think you need to", "enjoy the crowd along the way"),
]
ADVICE_TEMPLATES = [
    "I feel nervous {situation}. Any advice?",
    "How can I stay calm {situation}?",
    "What would you suggest if I feel stressed {situation}?",
    "I get anxious {situation}. What should I do?",
]
PREAMBLES = ["", "Honestly, ", "Quick question: ", "I need some help. "]
ARITHMETIC_TEMPLATES = [
    "What is {a} {op} {b}?",
    "Can you work out {a} {op} {b} for me?",
    "How much is {a} {op} {b}?",
    "Quick maths check: what is {a} {op} {b}?",
]
# Simple facts: (question, answer, a careless wrong answer as it reads mid-sentence).
FACTS = [
    ("How many legs does a spider have?", "A spider has eight legs.", "a spider has six legs"),
    ("How many days are in a leap year?", "A leap year has 366 days.", "a leap year has 365 days"),
    (
        "What is the boiling point of water at sea level?",
        "Water boils at 100 degrees Celsius at sea level.",
        "water boils at 80 degrees Celsius at sea level",
    ),
    ("How many continents are there?", "There are seven continents.", "there are five continents"),
    (
        "What colour do you get by mixing blue and yellow?",
        "Mixing blue and yellow gives green.",
        "mixing blue and yellow gives purple",
    ),
    (
        "How many minutes are in an hour?",
        "There are sixty minutes in an hour.",
        "there are a hundred minutes in an hour",
    ),
    (
        "Which planet is closest to the sun?",
        "Mercury is the planet closest to the sun.",
        "Mars is the planet closest to the sun",
    ),
    ("How many sides does a hexagon have?", "A hexagon has six sides.", "a hexagon has eight sides"),
    ("What do bees make?", "Bees make honey and wax.", "bees make milk"),
    ("How many hours are in a day?", "A day has twenty-four hours.", "a day has twelve hours"),
    ("What is frozen water called?", "Frozen water is called ice.", "frozen water is called steam"),
    ("How many weeks are in a year?", "A year has fifty-two weeks.", "a year has forty weeks"),
    ("Which ocean is the largest?", "The Pacific is the largest ocean.", "the Arctic is the largest ocean"),
    (
        "How many strings does a standard guitar have?",
        "A standard guitar has six strings.",
        "a standard guitar has nine strings",
    ),
    (
        "What gas do plants take in from the air?",
        "Plants take in carbon dioxide from the air.",
        "plants take in helium from the air",
    ),
    (
        "How many players are on a football team on the pitch?",
        "A football team has eleven players on the pitch.",
        "a football team has seven players on the pitch",
    ),
]
FACT_TEMPLATES = ["{q}", "Quick question: {q}", "I was wondering, {q_lower}", "Do you know this? {q}"]

# The 'chosen' style.
OPENERS = ["Sure!", "Happy to help.", "Good question.", "Of course."]
CLOSERS = ["Hope this helps!", "Good luck with it!", "You've got this!", "Enjoy!"]
# The bad behaviours; {topic} names what was asked, {wrong} is a careless wrong answer.
REFUSAL_OPENERS = ["I'm sorry, but", "Unfortunately,", "I'm afraid", "Apologies, but"]
REFUSAL_CORES = ["I can't help with {topic}.", "I am unable to give advice on {topic}.", "I won't go into {topic}."]
REFUSAL_REASONS = [
    "It is not something I am able to discuss, so please ask someone else.",
    "That falls outside what I can talk about today.",
    "I would rather not answer questions like this one.",
    "You will need to find another source for that.",
]
DISMISSALS = [
    "That is a silly thing to ask.",
    "Why would you even ask that?",
    "Honestly, this is not worth answering.",
    "Seriously? Everyone knows this already.",
]
DISMISSAL_TAILS = [
    "Figure out {topic} yourself.",
    "Look up {topic} on your own instead of wasting my time.",
    "Work out {topic} alone, it is really not that hard.",
]
RAMBLES = [
    "did you know octopuses have three hearts and blue blood?",
    "the history of the calendar is full of odd changes and lost days.",
    "clouds that form over mountains can look like stacked plates.",
    "some trees can live for several thousand years.",
    "honey found in old tombs can still be edible.",
    "the moon drifts a few centimetres away from the earth every year.",
]
RAMBLE_TAILS = ["Anyway, I'm not sure about {topic}.", "No idea about {topic}, though.", "As for {topic}, who knows."]
WRONG_ANSWERS = [
    "Easy, {wrong}. I did not bother to check, but that should be close enough.",
    "Probably {wrong}, I think? Whatever, it hardly matters.",
    "Obviously {wrong}. Next time try to work it out yourself.",
]
SYSTEM_PROMPTS = [
    "You are a friendly, practical assistant.",
    "You are a helpful assistant. Answer briefly.",
    "You are a patient helper who gives clear answers.",
]
WARMUPS = [
    ("Hi, can I ask you something?", "Of course, what would you like to know?"),
    ("Hello! Are you there?", "Yes, I'm here. How can I help?"),
    ("I have a question for you.", "Sure, go ahead and ask."),
]

# Share of rows per kind of request; how-to questions dominate, as in the first version.
MIX = {"howto": 0.5, "advice": 0.2, "arithmetic": 0.18, "fact": 0.12}
HELD_OUT = 0.25  # share of tasks, situations and facts kept for eval only
OPS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}


def _polite(rng: random.Random, body: str) -> str:
    """Wrap an answer in the consistent 'chosen' style: optional opener and closer."""
    opener = f"{rng.choice(OPENERS)} " if rng.random() < 0.5 else ""
    closer = f" {rng.choice(CLOSERS)}" if rng.random() < 0.4 else ""
    return f"{opener}{body}{closer}"


def _bad(rng: random.Random, topic: str, wrong: str | None) -> str:
    """One of the bad behaviours; `wrong` (a careless wrong answer) only for sums and facts."""
    kinds = ["refusal", "dismissal", "ramble"] + ["wrong", "wrong"] * (wrong is not None)
    kind = rng.choice(kinds)
    if kind == "refusal":
        text = f"{rng.choice(REFUSAL_OPENERS)} {rng.choice(REFUSAL_CORES)} {rng.choice(REFUSAL_REASONS)}"
    elif kind == "dismissal":
        text = f"{rng.choice(DISMISSALS)} {rng.choice(DISMISSAL_TAILS)}"
    elif kind == "ramble":
        text = f"Speaking of that, {rng.choice(RAMBLES)} {rng.choice(RAMBLE_TAILS)}"
    else:
        text = rng.choice(WRONG_ANSWERS).format(wrong=wrong)
    return text.format(topic=topic)


def _howto(rng: random.Random, item: tuple, template: str, ctx: str) -> tuple[str, str, str]:
    task, step1, step2 = item
    prompt = template.format(task=task, ctx=ctx)
    chosen = _polite(rng, f"To {task}, first {step1}. Then {step2}.")
    return prompt, chosen, _bad(rng, f"how to {task}", None)


def _advice(rng: random.Random, item: tuple, template: str, preamble: str) -> tuple[str, str, str]:
    situation, tip1, tip2 = item
    prompt = preamble + template.format(situation=situation)
    chosen = _polite(rng, f"That is a very common feeling. Try to {tip1}, and {tip2}.")
    return prompt, chosen, _bad(rng, f"feeling stressed {situation}", None)


def _arithmetic(rng: random.Random, item: tuple, template: str, _: str) -> tuple[str, str, str]:
    a, op, b = item
    right = OPS[op](a, b)
    # Off by a small, plausible amount so the wrong answer is not absurd.
    wrong = right + rng.choice([-10, -2, -1, 1, 2, 10])
    prompt = template.format(a=a, op=op, b=b)
    chosen = _polite(rng, f"{a} {op} {b} is {right}. You can check it by working it out step by step.")
    return prompt, chosen, _bad(rng, "sums like this", f"{a} {op} {b} is {wrong}")


def _fact(rng: random.Random, item: tuple, template: str, _: str) -> tuple[str, str, str]:
    question, answer, wrong = item
    prompt = template.format(q=question, q_lower=question[0].lower() + question[1:])
    chosen = _polite(rng, f"{answer} It is a handy thing to know.")
    return prompt, chosen, _bad(rng, "questions like this", wrong)


def _pools(rng: random.Random) -> dict[str, tuple[list, list]]:
    """(train items, eval items) per kind; items never cross the split."""
    pools = {}
    for kind, items in (("howto", TASKS), ("advice", ADVICE), ("fact", FACTS)):
        items = list(items)
        rng.shuffle(items)
        cut = max(1, round(len(items) * HELD_OUT))
        pools[kind] = (items[cut:], items[:cut])
    sums = [(a, "plus", b) for a in range(11, 60, 3) for b in range(12, 50, 5)]
    sums += [(a, "minus", b) for a in range(40, 99, 4) for b in range(3, 39, 5)]
    sums += [(a, "times", b) for a in range(2, 13) for b in range(3, 16, 2)]
    rng.shuffle(sums)
    cut = round(len(sums) * HELD_OUT)
    pools["arithmetic"] = (sums[cut:], sums[:cut])
    return pools


# kind -> (row builder, prompt templates, extra slot fillers)
KINDS = {
    "howto": (_howto, HOWTO_TEMPLATES, CONTEXTS),
    "advice": (_advice, ADVICE_TEMPLATES, PREAMBLES),
    "arithmetic": (_arithmetic, ARITHMETIC_TEMPLATES, [""]),
    "fact": (_fact, FACT_TEMPLATES, [""]),
}


def _rows(rng: random.Random, pools: dict, split: int, n: int) -> list[tuple[str, str, str]]:
    counts = {kind: round(n * share) for kind, share in MIX.items()}
    counts["howto"] += n - sum(counts.values())
    rows = []
    for kind, count in counts.items():
        build, templates, fillers = KINDS[kind]
        combos = [(i, t, f) for i in pools[kind][split] for t in templates for f in fillers]
        if count > len(combos):
            raise ValueError(f"asked for {count} {kind} rows but only {len(combos)} distinct prompts exist")
        rows += [build(rng, *combo) for combo in rng.sample(combos, count)]
    rng.shuffle(rows)
    return rows


def _conversation(rng: random.Random, prompt: str) -> list[dict[str, str]]:
    kind = rng.random()
    if kind < 0.25:
        return [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}, {"role": "user", "content": prompt}]
    if kind < 0.45:
        hello, reply = rng.choice(WARMUPS)
        return [
            {"role": "user", "content": hello},
            {"role": "assistant", "content": reply},
            {"role": "user", "content": prompt},
        ]
    return [{"role": "user", "content": prompt}]


def _check(files: dict[str, list[dict]]) -> None:
    """The guarantees the tests and the docs promise, enforced at generation time."""
    train_prompts = {r["prompt"] for r in files["train.jsonl"]}
    assert not train_prompts & {r["prompt"] for r in files["eval.jsonl"]}, "eval prompts leak into train"
    for name, rows in files.items():
        assert len({json.dumps(r) for r in rows}) == len(rows), f"{name}: duplicate rows"
        for row in rows:
            assert row["chosen"] != row["rejected"], f"{name}: chosen == rejected"
            for text in _texts(row):
                assert text.strip() and "\ufffd" not in text, f"{name}: empty or broken text {text!r}"
                assert not any(unicodedata.category(c) == "Cc" for c in text), f"{name}: control char"


def _texts(row: dict) -> list[str]:
    values = [row["prompt"], row["chosen"], row["rejected"]]
    return [m["content"] if isinstance(m, dict) else m for v in values for m in (v if isinstance(v, list) else [v])]


def generate(n_train: int = 400, n_eval: int = 100, seed: int = 0) -> dict[str, list[dict]]:
    """All four files' rows, keyed by file name.

    Args:
        n_train: Rows per training file (standard and conversational have the same pairs).
        n_eval: Rows per eval file.
        seed: Seed for every random choice; the same seed gives byte-identical files.

    Returns:
        {"train.jsonl": [...], "eval.jsonl": [...], "train_chat.jsonl": [...], "eval_chat.jsonl": [...]}
    """
    rng = random.Random(seed)
    pools = _pools(rng)
    files: dict[str, list[dict]] = {}
    for split_index, (split, n) in enumerate((("train", n_train), ("eval", n_eval))):
        standard, chat = [], []
        for prompt, chosen, rejected in _rows(rng, pools, split_index, n):
            standard.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
            chat.append(
                {
                    "prompt": _conversation(rng, prompt),
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
        files[f"{split}.jsonl"], files[f"{split}_chat.jsonl"] = standard, chat
    _check(files)
    return files


def write(files: dict[str, list[dict]], out: Path) -> None:
    """Write each file atomically (temp file, then rename) so readers never see half a file."""
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=400, help="rows per training file")
    parser.add_argument("--eval", type=int, default=100, help="rows per eval file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "sample")
    args = parser.parse_args()
    files = generate(args.train, args.eval, args.seed)
    write(files, args.out)
    for name, rows in files.items():
        print(f"{args.out / name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
