"""Rehearsal copies of the lmms-eval datasets (`lmms-lab-encoder/*` in lmms-eval 0.7.3): upstream
configs, splits, columns and feature types, one small drawn picture per row, questions about
that picture with right answers. Every builder takes a seed and returns
{config_name: {split: Dataset}} for harness.eval.mirror.write_repo.
"""

from __future__ import annotations

import random

from datasets import Dataset, Features, Image, List, Value

from harness.eval.mirror import Configs
from harness.rehearsal.images import COLOURS, SHAPES, SIZE, draw

S = Value("string")
EVAL_ROWS = 10
# textvqa's train split: every 10th row is paper13_val's held-out proxy (4 rows)
TEXTVQA_TRAIN_ROWS = 40

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
                  "landmark", "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation",
                 "code_reasoning")
_YES_NO = " Please answer yes or no."
_WORDS = ("STOP", "OPEN", "CAFE", "PARK", "BOOK", "FISH", "MILK", "RAIN", "STAR", "GOLD")


def _scene(rng: random.Random) -> tuple[str, str, int]:
    return rng.choice(SHAPES), rng.choice(sorted(COLOURS)), rng.randint(1, 4)


def _other(rng: random.Random, pool, not_this):
    return rng.choice([x for x in sorted(pool) if x != not_this])


def _mme_pair(rng: random.Random, category: str) -> tuple[object, str, str]:
    """(image, question with answer Yes, question with answer No) for one MME category."""
    shape, colour, count = _scene(rng)
    word = rng.choice(_WORDS)
    a, b = rng.randint(1, 4), rng.randint(1, 5)
    if category == "existence":
        return (draw(shape, colour), f"Is there a {colour} {shape} in this image?",
                f"Is there a {_other(rng, COLOURS, colour)} {shape} in this image?")
    if category == "count":
        return (draw(shape, colour, count=count), f"Are there {count} {shape}s in the image?",
                f"Are there {count + 1} {shape}s in the image?")
    if category == "position":
        return (draw(shape, colour), f"Is the {shape} in the upper left part of the image?",
                f"Is the {shape} in the lower right part of the image?")
    if category == "color":
        return (draw(shape, colour), f"Is the {shape} in the image {colour}?",
                f"Is the {shape} in the image {_other(rng, COLOURS, colour)}?")
    if category == "numerical_calculation":
        return (draw(shape, colour, word=f"{a}+{b}="),
                f"Is the answer to the arithmetic question in the image {a + b}?",
                f"Is the answer to the arithmetic question in the image {a + b + 1}?")
    if category == "code_reasoning":
        return (draw(shape, colour, word=f"{a}*{b}"),
                f"Does the Python expression in the image evaluate to {a * b}?",
                f"Does the Python expression in the image evaluate to {a * b + 2}?")
    other = _other(rng, _WORDS, word)
    subject = {"posters": "Is this movie titled {}?", "celebrity": "Is the sign held by {}?",
               "scene": "Is this picture taken in a place called {}?",
               "landmark": "Is this a photo of {} tower?", "artwork": "Is this artwork titled {}?",
               "OCR": "Is the word in the image \"{}\"?",
               "commonsense_reasoning": "Does the sign in the image say {}?",
               "text_translation": "Is it appropriate to read the word in the image as \"{}\"?"}
    q = subject[category]
    return draw(shape, colour, word=word), q.format(word), q.format(other)


def mme(seed: int = 0) -> Configs:
    """lmms-lab-encoder/MME (default config): test, one yes/no pair per category (14 categories).

    Columns: question_id str (`<category>/<nnnn>.png`, shared by the two rows of a pair),
    image Image, question str (ending "Please answer yes or no."), answer "Yes"/"No",
    category str. The pair's rows are adjacent, so any even `limit` keeps pairs whole; the first
    categories alternate perception and cognition, so `limit=4` yields both scores.
    """
    rng = random.Random(seed)
    features = Features({"question_id": S, "image": Image(), "question": S, "answer": S,
                         "category": S})
    recs = []
    alternating = [c for pair in zip(MME_PERCEPTION, MME_COGNITION) for c in pair]
    for k, category in enumerate(alternating + list(MME_PERCEPTION[len(MME_COGNITION):])):
        image, yes_q, no_q = _mme_pair(rng, category)
        qid = f"{category}/{k:04d}.png"
        recs.append({"question_id": qid, "image": image, "question": yes_q + _YES_NO,
                     "answer": "Yes", "category": category})
        recs.append({"question_id": qid, "image": image, "question": no_q + _YES_NO,
                     "answer": "No", "category": category})
    return {"default": {"test": Dataset.from_list(recs, features=features)}}


def _letter_question(rng: random.Random) -> tuple[object, str, list[str], int]:
    """(image, question, four options, index of the right one) about colour or count."""
    shape, colour, count = _scene(rng)
    if rng.random() < 0.5:
        options = rng.sample([c for c in sorted(COLOURS) if c != colour], 3)
        gold = rng.randrange(4)
        options.insert(gold, colour)
        return draw(shape, colour), f"What colour is the {shape}?", options, gold
    return (draw(shape, colour, count=count), f"How many {shape}s are in the image?",
            ["1", "2", "3", "4"], count - 1)


def mmbench(seed: int = 0) -> Configs:
    """lmms-lab-encoder/MMBench `en`: dev.

    Columns: index int64 (< 1e6: no circular copies), question str, hint str ("nan" when none),
    A-D str (four real options), answer letter, category str, image Image, source str,
    L2-category str, comment str, split "dev".
    """
    rng = random.Random(seed)
    features = Features({"index": Value("int64"), "question": S, "hint": S, "A": S, "B": S,
                         "C": S, "D": S, "answer": S, "category": S, "image": Image(),
                         "source": S, "L2-category": S, "comment": S, "split": S})
    recs = []
    for i in range(EVAL_ROWS):
        image, question, options, gold = _letter_question(rng)
        counting = question.startswith("How many")
        recs.append({"index": i, "question": question,
                     "hint": "The picture shows simple shapes." if i % 3 == 0 else "nan",
                     **dict(zip("ABCD", options)), "answer": "ABCD"[gold],
                     "category": "object_localization" if counting else "attribute_recognition",
                     "image": image, "source": "rehearsal",
                     "L2-category": ("finegrained_perception (instance-level)" if counting
                                     else "attribute_reasoning"),
                     "comment": "nan", "split": "dev"})
    return {"en": {"dev": Dataset.from_list(recs, features=features)}}


def seed_bench(seed: int = 0) -> Configs:
    """lmms-lab-encoder/SEED-Bench (default config): test, image rows only.

    Columns: answer letter, choice_a-choice_d str, data_id str, data_type "image", question str,
    question_id str, question_type_id int16, image Sequence(Image) (a list of one picture).
    """
    rng = random.Random(seed)
    features = Features({"answer": S, "choice_a": S, "choice_b": S, "choice_c": S, "choice_d": S,
                         "data_id": S, "data_type": S, "question": S, "question_id": S,
                         "question_type_id": Value("int16"), "image": List(Image())})
    recs = []
    for i in range(EVAL_ROWS):
        image, question, options, gold = _letter_question(rng)
        recs.append({"answer": "ABCD"[gold],
                     **{f"choice_{c}": o for c, o in zip("abcd", options)},
                     "data_id": f"rehearsal/{i:05d}.png", "data_type": "image",
                     "question": question, "question_id": str(100 + i),
                     "question_type_id": 2 if question.startswith("How many") else 3,
                     "image": [image]})
    return {"default": {"test": Dataset.from_list(recs, features=features)}}


def pope(seed: int = 0) -> Configs:
    """lmms-lab-encoder/POPE: `default` (test, all three categories) and `Full` (adversarial,
    popular, random), yes and no answers alternating.

    Columns: id str, question_id str, question str, answer "yes"/"no", image_source str,
    image Image, category str.
    """
    rng = random.Random(seed)
    features = Features({"id": S, "question_id": S, "question": S, "answer": S,
                         "image_source": S, "image": Image(), "category": S})
    categories = ("adversarial", "popular", "random")

    def rows(n: int, category: str | None, start: int) -> Dataset:
        recs = []
        for i in range(n):
            shape, colour, _ = _scene(rng)
            asked = shape if i % 2 == 0 else _other(rng, SHAPES, shape)
            cat = category or categories[i % 3]
            recs.append({"id": str(start + i), "question_id": str(start + i + 1),
                         "question": f"Is there a {asked} in the image?",
                         "answer": "yes" if asked == shape else "no",
                         "image_source": f"rehearsal_{start + i:06d}", "image": draw(shape, colour),
                         "category": cat})
        return Dataset.from_list(recs, features=features)

    return {"default": {"test": rows(EVAL_ROWS, None, 0)},
            "Full": {c: rows(4, c, 1000 * (k + 1)) for k, c in enumerate(categories)}}


def textvqa(seed: int = 0) -> Configs:
    """lmms-lab-encoder/textvqa (default config): train and validation (question ids disjoint).

    Columns: image_id str, question_id int32, question str, question_tokens list[str], image Image,
    image_width / image_height int32, flickr_original_url / flickr_300k_url str, answers list[str]
    (10 annotators: 8 give the word, 2 do not), image_classes list[str], set_name "val",
    ocr_tokens list[str].
    """
    rng = random.Random(seed)
    features = Features({"image_id": S, "question_id": Value("int32"), "question": S,
                         "question_tokens": List(S), "image": Image(),
                         "image_width": Value("int32"), "image_height": Value("int32"),
                         "flickr_original_url": S, "flickr_300k_url": S, "answers": List(S),
                         "image_classes": List(S), "set_name": S, "ocr_tokens": List(S)})

    def rows(n: int, first_id: int, set_name: str) -> Dataset:
        recs = []
        for i in range(n):
            shape, colour, _ = _scene(rng)
            word = rng.choice(_WORDS)
            question = "what word is written on the picture?"
            recs.append({"image_id": f"{first_id + i:016x}", "question_id": first_id + i,
                         "question": question, "question_tokens": question.rstrip("?").split(),
                         "image": draw(shape, colour, word=word),
                         "image_width": SIZE, "image_height": SIZE,
                         "flickr_original_url": "", "flickr_300k_url": "",
                         "answers": [word.lower()] * 8 + ["unanswerable",
                                                          f"{word.lower()} sign"],
                         "image_classes": [shape], "set_name": set_name, "ocr_tokens": [word]})
        return Dataset.from_list(recs, features=features)

    # upstream numbers train questions from 0 and validation ones from 34602
    validation = rows(EVAL_ROWS, 34602, "val")
    return {"default": {"train": rows(TEXTVQA_TRAIN_ROWS, 0, "train"),
                        "validation": validation}}


def scienceqa(seed: int = 0) -> Configs:
    """lmms-lab-encoder/ScienceQA `ScienceQA-IMG`: test and validation, every row with an image;
    no row repeats across the two.

    Columns: image Image, question str, choices list[str] (2-4), answer int8 (index), hint str
    ("" when none), task, grade, subject, topic, category, skill, lecture, solution str.
    """
    rng = random.Random(seed)
    features = Features({"image": Image(), "question": S, "choices": List(S),
                         "answer": Value("int8"), "hint": S, "task": S, "grade": S,
                         "subject": S, "topic": S, "category": S, "skill": S, "lecture": S,
                         "solution": S})
    seen: set = set()

    def rows(n: int) -> Dataset:
        recs = []
        while len(recs) < n:
            i = len(recs)
            image, question, options, gold = _letter_question(rng)
            k = 2 + i % 3
            keep = sorted(rng.sample([j for j in range(4) if j != gold], k - 1) + [gold])
            rec = {"image": image, "question": question.replace("the image", "the picture"),
                   "choices": [options[j] for j in keep], "answer": keep.index(gold),
                   "hint": "Look at the picture." if i % 2 else "", "task": "closed choice",
                   "grade": f"grade{2 + i % 4}", "subject": "natural science",
                   "topic": "shapes", "category": "Visual elements",
                   "skill": "Identify shapes", "lecture": "Shapes have colours and counts.",
                   "solution": f"The answer is {options[gold]}."}
            key = repr([rec[c] for c in ("question", "choices", "answer", "hint", "grade")])
            if key not in seen:
                seen.add(key)
                recs.append(rec)
        return Dataset.from_list(recs, features=features)

    test = rows(EVAL_ROWS)
    return {"ScienceQA-IMG": {"test": test, "validation": rows(EVAL_ROWS)}}


def gqa(seed: int = 0) -> Configs:
    """lmms-lab-encoder/GQA: `testdev_balanced_instructions` and `testdev_balanced_images`
    (split testdev each), and `val_balanced_instructions` / `val_balanced_images` (split val)
    for paper13_val, with other question and image ids. Two questions per image; each images
    config holds every imageId of its questions.

    Instructions columns: id str, imageId str, question str, answer str, fullAnswer str,
    isBalanced bool, groups {global, local: str}, types {structural, semantic, detailed: str},
    semanticStr str. Images columns: id str, image Image.
    """
    rng = random.Random(seed)
    qfeat = Features({"id": S, "imageId": S, "question": S, "answer": S, "fullAnswer": S,
                      "isBalanced": Value("bool"), "groups": {"global": S, "local": S},
                      "types": {"structural": S, "semantic": S, "detailed": S},
                      "semanticStr": S})
    ifeat = Features({"id": S, "image": Image()})
    testdev = _gqa_rows(rng, 161313, 201307251)
    val = _gqa_rows(rng, 2354786, 5000)
    return {"testdev_balanced_instructions":
                {"testdev": Dataset.from_list(testdev[0], features=qfeat)},
            "testdev_balanced_images": {"testdev": Dataset.from_list(testdev[1], features=ifeat)},
            "val_balanced_instructions": {"val": Dataset.from_list(val[0], features=qfeat)},
            "val_balanced_images": {"val": Dataset.from_list(val[1], features=ifeat)}}


def _gqa_rows(rng: random.Random, first_image: int, first_question: int
              ) -> tuple[list[dict], list[dict]]:
    """(question rows, image rows) of one GQA split, ids counted up from the given ones."""
    questions, images = [], []
    for i in range(EVAL_ROWS // 2):
        shape, colour, _ = _scene(rng)
        image_id = f"n{first_image + i}"
        images.append({"id": image_id, "image": draw(shape, colour)})
        questions.append({"id": f"{first_question + 2 * i}", "imageId": image_id,
                          "question": "What color is the shape?", "answer": colour,
                          "fullAnswer": f"The shape is {colour}.", "isBalanced": True,
                          "groups": {"global": "", "local": "10q-shape_color"},
                          "types": {"structural": "query", "semantic": "attr",
                                    "detailed": "colorObj"},
                          "semanticStr": f"select: shape ({i})->query: color [{i}]"})
        asked = rng.choice(SHAPES)
        answer = "yes" if asked == shape else "no"
        questions.append({"id": f"{first_question + 1 + 2 * i}", "imageId": image_id,
                          "question": f"Is there a {asked} in the picture?", "answer": answer,
                          "fullAnswer": f"{answer.capitalize()}, there is "
                                        f"{'a' if answer == 'yes' else 'no'} {asked}.",
                          "isBalanced": True, "groups": {"global": "", "local": "13-shape"},
                          "types": {"structural": "verify", "semantic": "obj",
                                    "detailed": "existC"},
                          "semanticStr": f"select: {asked} ({i})->exist: ?"})
    return questions, images
