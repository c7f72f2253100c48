"""Rehearsal copies of the lm-eval datasets: upstream configs, splits, columns and feature types,
with templated arithmetic rows whose answers are right. Every builder takes a seed and returns
{config_name: {split: Dataset}} for harness.eval.mirror.write_repo.

Few-shot splits hold the fewest rows the paper's shot count needs, and evaluation splits are
small because rehearsals run with a `limit`. lm-eval 0.4.13's default sampler draws shots + 1
rows (to drop the evaluated doc) whenever the few-shot split equals `test_split`, which includes
tasks that set neither (hellaswag, winogrande, triviaqa, nq_open: None == None); those few-shot
splits therefore hold shots + 1 rows. MMLU's `first_n` sampler and tasks with a distinct few-shot
split (arc_challenge, gsm8k) need exactly `shots`.

The training splits of gsm8k, hellaswag and winogrande are larger: paper13_val holds every 10th
training row out for validation (harness/eval/tasks/paper13_val) and draws its shots from the
rest. No question repeats across the splits of a dataset, so validation docs are disjoint from
the reported ones in content as well as in split.
"""

from __future__ import annotations

import random

from datasets import ClassLabel, Dataset, Features, List, Value

from harness.eval.mirror import Configs

S = Value("string")

MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics",
    "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
    "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations", "security_studies",
    "sociology", "us_foreign_policy", "virology", "world_religions",
)  # the `dataset_name`s of lm-eval's mmlu/default/mmlu_*.yaml (cais/mmlu's subject configs)

EVAL_ROWS = 10  # rows of each evaluation split (MMLU: per subject, see MMLU_TEST_ROWS)
MMLU_TEST_ROWS = 4
MMLU_DEV_ROWS = 5  # = the paper's 5 shots, drawn first_n from `dev`
HELDOUT_TRAIN_ROWS = 40  # gsm8k, hellaswag, winogrande: 4 held-out rows + a 36-row few-shot pool
ARC_TRAIN_ROWS = 25  # 25 shots
QA_TRAIN_ROWS = 9  # triviaqa / nq_open: up to 8 shots + 1, for a few-shot generation suite

_NAMES = ("Ava", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun")
_ITEMS = ("apples", "pencils", "stamps", "marbles", "books", "shells", "coins", "cards")


def _sum_question(rng: random.Random) -> tuple[str, int, int, int]:
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    return f"What is {a} + {b}?", a, b, a + b


def _distractors(rng: random.Random, right: int, n: int = 3) -> list[int]:
    """n distinct wrong numbers near `right`."""
    out: list[int] = []
    while len(out) < n:
        cand = right + rng.choice((-1, 1)) * rng.randint(1, 9)
        if cand != right and cand not in out and cand >= 0:
            out.append(cand)
    return out


def _options(rng: random.Random, right: int, n: int = 4) -> tuple[list[str], int]:
    """n numeric options as strings with the right one at a random position; (options, index)."""
    opts = _distractors(rng, right, n - 1)
    gold = rng.randrange(n)
    opts.insert(gold, right)
    return [str(o) for o in opts], gold


_MMLU_FEATURES = Features({"question": S, "subject": S, "choices": List(S),
                           "answer": ClassLabel(names=["A", "B", "C", "D"])})


def _fresh(seen: set, key: str) -> bool:
    """Whether `key` is new to a dataset (then it is remembered): no doc repeats across splits."""
    if key in seen:
        return False
    seen.add(key)
    return True


def _mmlu_rows(rng: random.Random, subject: str, n: int, seen: set) -> Dataset:
    topic = subject.replace("_", " ")
    recs = []
    while len(recs) < n:
        q, _, _, right = _sum_question(rng)
        if not _fresh(seen, q):
            continue
        choices, gold = _options(rng, right)
        recs.append({"question": f"In {topic}, a count is needed. {q}", "subject": subject,
                     "choices": choices, "answer": gold})
    return Dataset.from_list(recs, features=_MMLU_FEATURES)


def mmlu(seed: int = 0) -> Configs:
    """cais/mmlu: 57 subject configs, each with test / validation / dev.

    Columns: question str, subject str, choices list[str] (4), answer ClassLabel(A, B, C, D).
    """
    out: Configs = {}
    for k, subject in enumerate(MMLU_SUBJECTS):
        rng, seen = random.Random(seed * 1000 + k), set()
        out[subject] = {"test": _mmlu_rows(rng, subject, MMLU_TEST_ROWS, seen),
                        "validation": _mmlu_rows(rng, subject, 2, seen),
                        "dev": _mmlu_rows(rng, subject, MMLU_DEV_ROWS, seen)}
    return out


def gsm8k(seed: int = 0) -> Configs:
    """openai/gsm8k `main`: train / test with question str and answer str ending in `#### <n>`."""
    rng, seen = random.Random(seed), set()
    features = Features({"question": S, "answer": S})

    def rows(n: int) -> Dataset:
        recs = []
        while len(recs) < n:
            name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
            a, b, c = rng.randint(3, 40), rng.randint(2, 30), rng.randint(1, 9)
            total = a + b - c
            question = (f"{name} has {a} {item}. A friend gives {name} {b} more, and then "
                        f"{name} loses {c}. How many {item} does {name} have now?")
            if not _fresh(seen, question):
                continue
            recs.append({
                "question": question,
                "answer": (f"After the gift {name} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} "
                           f"{item}.\nAfter the loss {name} has {a + b} - {c} = "
                           f"<<{a + b}-{c}={total}>>{total} {item}.\n#### {total}"),
            })
        return Dataset.from_list(recs, features=features)

    return {"main": {"train": rows(HELDOUT_TRAIN_ROWS), "test": rows(EVAL_ROWS)}}


_ARC_FEATURES = Features({"id": S, "question": S,
                          "choices": {"text": List(S), "label": List(S)}, "answerKey": S})


def _arc_rows(rng: random.Random, config: str, split: str, n: int, seen: set) -> Dataset:
    recs = []
    while len(recs) < n:
        i = len(recs)
        q, _, _, right = _sum_question(rng)
        if not _fresh(seen, q):
            continue
        texts, gold = _options(rng, right)
        labels = list("1234") if i % 7 == 3 else list("ABCD")
        recs.append({"id": f"Rehearsal_{config}_{split}_{i}", "question": q,
                     "choices": {"text": texts, "label": labels}, "answerKey": labels[gold]})
    return Dataset.from_list(recs, features=_ARC_FEATURES)


def ai2_arc(seed: int = 0) -> Configs:
    """allenai/ai2_arc `ARC-Challenge` and `ARC-Easy`: train / validation / test.

    Columns: id str, question str, choices {text: list[str], label: list[str]}, answerKey str (one
    of choices.label). A few rows use the numeric labels "1".."4" that upstream also has.
    """
    out: Configs = {}
    for c, config in enumerate(("ARC-Challenge", "ARC-Easy")):
        rng, seen = random.Random(seed * 10 + c), set()
        out[config] = {"train": _arc_rows(rng, config, "train", ARC_TRAIN_ROWS, seen),
                       "validation": _arc_rows(rng, config, "validation", 4, seen),
                       "test": _arc_rows(rng, config, "test", EVAL_ROWS, seen)}
    return out


def hellaswag(seed: int = 0) -> Configs:
    """Rowan/hellaswag (default config): train / validation.

    Columns: ind int32, activity_label str, ctx_a str, ctx_b str, ctx str, endings list[str] (4),
    source_id str, split str, split_type str, label str "0".."3".
    """
    rng, seen = random.Random(seed), set()
    features = Features({"ind": Value("int32"), "activity_label": S, "ctx_a": S, "ctx_b": S,
                         "ctx": S, "endings": List(S), "source_id": S, "split": S,
                         "split_type": S, "label": S})
    acts = [("Counting things", "counts the"), ("Adding numbers", "adds up the")]

    def rows(split: str, n: int, start: int) -> Dataset:
        recs = []
        while len(recs) < n:
            i = len(recs)
            label, verb = acts[i % 2]
            name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
            a, b = rng.randint(2, 9), rng.randint(2, 9)
            ctx_a = f"{name} puts {a} {item} on a table and then {b} more."
            ctx_b = f"{name} {verb} {item} and"
            if not _fresh(seen, f"{ctx_a} {ctx_b}"):
                continue
            endings = [f"says there are {v} {item}." for v in _distractors(rng, a + b)]
            gold = rng.randrange(4)
            endings.insert(gold, f"says there are {a + b} {item}.")
            recs.append({"ind": start + i, "activity_label": label, "ctx_a": ctx_a,
                         "ctx_b": ctx_b, "ctx": f"{ctx_a} {ctx_b}", "endings": endings,
                         "source_id": f"rehearsal~{start + i}", "split": split,
                         "split_type": "indomain", "label": str(gold)})
        return Dataset.from_list(recs, features=features)

    return {"default": {"train": rows("train", HELDOUT_TRAIN_ROWS, 0),
                        "validation": rows("val", EVAL_ROWS, 1000)}}


def winogrande(seed: int = 0) -> Configs:
    """allenai/winogrande `winogrande_xl`: train / validation.

    Columns: sentence str (exactly one "_"), option1 str, option2 str, answer str "1"/"2".
    """
    rng, seen = random.Random(seed), set()
    features = Features({"sentence": S, "option1": S, "option2": S, "answer": S})

    def rows(n: int) -> Dataset:
        recs = []
        while len(recs) < n:
            p, q = rng.sample(_NAMES, 2)
            a, b = rng.sample(range(2, 20), 2)
            item = rng.choice(_ITEMS)
            more = p if a > b else q
            sentence = f"{p} has {a} {item} and {q} has {b}, so _ has more {item}."
            if not _fresh(seen, sentence):
                continue
            recs.append({"sentence": sentence,
                         "option1": p, "option2": q, "answer": "1" if more == p else "2"})
        return Dataset.from_list(recs, features=features)

    return {"winogrande_xl": {"train": rows(HELDOUT_TRAIN_ROWS),
                              "validation": rows(EVAL_ROWS)}}


def truthful_qa(seed: int = 0) -> Configs:
    """truthfulqa/truthful_qa `multiple_choice`: validation only.

    Columns: question str; mc1_targets and mc2_targets {choices: list[str], labels: list[int32]}
    with the true answers first (mc1: exactly one true; mc2: one or more).
    """
    rng = random.Random(seed)
    targets = {"choices": List(S), "labels": List(Value("int32"))}
    features = Features({"question": S, "mc1_targets": targets, "mc2_targets": targets})
    recs = []
    for _ in range(EVAL_ROWS):
        q, a, b, right = _sum_question(rng)
        wrong = _distractors(rng, right)
        n_true = rng.randint(1, 2)
        true_answers = [f"{a} + {b} is {right}.", f"The sum is {right}."][:n_true]
        false_answers = [f"{a} + {b} is {w}." for w in wrong]
        recs.append({
            "question": q,
            "mc1_targets": {"choices": true_answers[:1] + false_answers,
                            "labels": [1] + [0] * len(false_answers)},
            "mc2_targets": {"choices": true_answers + false_answers,
                            "labels": [1] * n_true + [0] * len(false_answers)},
        })
    return {"multiple_choice": {"validation": Dataset.from_list(recs, features=features)}}


def trivia_qa(seed: int = 0) -> Configs:
    """mandarjoshi/trivia_qa `rc.nocontext`: train / validation.

    Columns: question str, question_id str, question_source str, entity_pages and search_results
    (dicts of lists, empty in rc.nocontext), answer {aliases, normalized_aliases: list[str];
    matched_wiki_entity_name, normalized_matched_wiki_entity_name, normalized_value, type,
    value: str}.
    """
    rng = random.Random(seed)
    features = Features({
        "question": S, "question_id": S, "question_source": S,
        "entity_pages": {"doc_source": List(S), "filename": List(S), "title": List(S),
                         "wiki_context": List(S)},
        "search_results": {"description": List(S), "filename": List(S),
                           "rank": List(Value("int32")), "title": List(S), "url": List(S),
                           "search_context": List(S)},
        "answer": {"aliases": List(S), "normalized_aliases": List(S),
                   "matched_wiki_entity_name": S, "normalized_matched_wiki_entity_name": S,
                   "normalized_value": S, "type": S, "value": S},
    })
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
             "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
             "seventeen", "eighteen"]

    def rows(split: str, n: int) -> Dataset:
        recs = []
        for i in range(n):
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            word = words[a + b]
            aliases = [word.capitalize(), str(a + b)]
            recs.append({
                "question": f"How many is {words[a]} plus {words[b]}",
                "question_id": f"rh_{split}_{i}", "question_source": "http://example.org/",
                "entity_pages": {"doc_source": [], "filename": [], "title": [],
                                 "wiki_context": []},
                "search_results": {"description": [], "filename": [], "rank": [], "title": [],
                                   "url": [], "search_context": []},
                "answer": {"aliases": aliases, "normalized_aliases": [x.lower() for x in aliases],
                           "matched_wiki_entity_name": "",
                           "normalized_matched_wiki_entity_name": "",
                           "normalized_value": word, "type": "FreeForm",
                           "value": word.capitalize()},
            })
        return Dataset.from_list(recs, features=features)

    return {"rc.nocontext": {"train": rows("train", QA_TRAIN_ROWS),
                             "validation": rows("validation", EVAL_ROWS)}}


def nq_open(seed: int = 0) -> Configs:
    """google-research-datasets/nq_open `nq_open` (its only config): train / validation.

    Columns: question str (lower case, no question mark), answer list[str].
    """
    rng = random.Random(seed)
    features = Features({"question": S, "answer": List(S)})

    def rows(n: int) -> Dataset:
        recs = []
        for _ in range(n):
            name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
            a, b = rng.randint(2, 30), rng.randint(2, 30)
            recs.append({"question": f"how many {item} does {name.lower()} have after getting "
                                     f"{a} and then {b} more",
                         "answer": [str(a + b), f"{a + b} {item}"]})
        return Dataset.from_list(recs, features=features)

    return {"nq_open": {"train": rows(QA_TRAIN_ROWS), "validation": rows(EVAL_ROWS)}}
