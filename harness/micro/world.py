"""The micro world: a small generated universe of facts, symbols and pictures.

Everything is generated from WORLD_SEED, so the training data and the benchmark files are the same
on every machine. Language skills (what the base LLM learns and the MLLM may forget):
  facts    — "the capital of <country> is <city>", "the <animal> eats <food>", "<person> lives
             in <city>" (multiple choice; knowledge)
  arith    — two-number addition, "12 + 7 = 19" (generative)
  copy     — "copy : w1 w2 w3 ->" repeat the words (generative; instruction following)
  reverse  — "reverse : w1 w2 w3 ->" reverse them (generative)
  pattern  — "red blue red blue red" → next item (multiple choice; completion)
Visual skills (what visual tuning adds): colour, shape, count and position of shapes in a picture,
and a POPE-style yes/no object-existence question.
Train, test and validation instances are disjoint by prompt, pictures by scene (facts: the test
benchmark asks the trained statements with distractors, which is knowledge recall as in MMLU; the
validation benchmark asks the same facts as questions, a wording no other split uses).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

WORLD_SEED = 1234

SYLLABLES = ["ka", "lo", "mi", "ra", "tu", "ve", "zo", "ni", "pe", "su", "do", "fa", "gi", "ha",
             "bu", "ce", "jo", "wy", "xe", "qu"]
COLORS = ["red", "green", "blue", "yellow", "purple", "white"]
SHAPES = ["circle", "square", "triangle"]
POSITIONS = ["left", "right"]
WORDS = ["apple", "river", "stone", "cloud", "horse", "lamp", "tree", "book", "ship", "coin",
         "bird", "door", "fish", "moon", "road", "wind"]
PATTERN_ITEMS = COLORS[:4] + SHAPES + ["one", "two", "three"]
RELATIONS = ("capital", "eats", "lives")
FUNCTION_WORDS = ["the", "of", "is", "capital", "eats", "lives", "in", "copy", "reverse", "next",
                  "what", "color", "shape", "how", "many", "shapes", "are", "there", "where",
                  "answer", "question", "a", "an", "yes", "no", "picture", "any", "side", "on",
                  "which", "item", "comes", "this", "image", "describe"]
SYMBOLS = ["+", "=", ":", "->", "?", ".", ","]


def _names(rng: random.Random, n: int, parts: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        name = "".join(rng.choice(SYLLABLES) for _ in range(parts))
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


@dataclass(frozen=True)
class World:
    """Entities and facts of the micro world."""

    countries: tuple
    cities: tuple
    animals: tuple
    foods: tuple
    people: tuple
    capital: dict
    eats: dict
    lives: dict

    def vocabulary(self) -> list[str]:
        """Every word the micro tokenizer needs (digits are single tokens)."""
        words = (list(self.countries) + list(self.cities) + list(self.animals) + list(self.foods)
                 + list(self.people) + COLORS + SHAPES + POSITIONS + WORDS + PATTERN_ITEMS
                 + FUNCTION_WORDS + SYMBOLS + [str(d) for d in range(10)])
        return sorted(dict.fromkeys(words))

    def facts(self) -> list[tuple[str, str, str]]:
        """(relation, subject, object) triples."""
        return ([("capital", c, v) for c, v in self.capital.items()]
                + [("eats", a, f) for a, f in self.eats.items()]
                + [("lives", p, c) for p, c in self.lives.items()])


def make_world(seed: int = WORLD_SEED, n_countries: int = 24, n_animals: int = 16,
               n_people: int = 16) -> World:
    """The deterministic world."""
    rng = random.Random(seed)
    taken: set[str] = set()
    countries = _names(rng, n_countries, 3, taken)
    cities = _names(rng, n_countries, 2, taken)
    animals = _names(rng, n_animals, 2, taken)
    foods = _names(rng, 8, 2, taken)
    people = _names(rng, n_people, 2, taken)
    capital = dict(zip(countries, cities))
    eats = {a: rng.choice(foods) for a in animals}
    lives = {p: rng.choice(cities) for p in people}
    return World(tuple(countries), tuple(cities), tuple(animals), tuple(foods), tuple(people),
                 capital, eats, lives)


def fact_statement(rel: str, subj: str, obj: str) -> tuple[str, str]:
    """(prompt, object) of a fact in statement form."""
    if rel == "capital":
        return f"the capital of {subj} is", obj
    if rel == "eats":
        return f"the {subj} eats", obj
    return f"{subj} lives in", obj


def spaced(n: int) -> str:
    """A number as the tokenizer sees it (digits are single tokens)."""
    return str(n)


# ---------------------------------------------------------------- language instances
def arith_instance(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 49), rng.randint(0, 49)
    return f"{a} + {b} =", str(a + b)


def copy_instance(rng: random.Random) -> tuple[str, str]:
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
    return f"copy : {' '.join(words)} ->", " ".join(words)


def reverse_instance(rng: random.Random) -> tuple[str, str]:
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 4))]
    return f"reverse : {' '.join(words)} ->", " ".join(reversed(words))


def pattern_instance(rng: random.Random) -> tuple[str, str, list[str]]:
    """(prompt, answer, choices): continue a repeating pattern of period 2 or 3."""
    period = rng.choice([2, 3])
    unit = rng.sample(PATTERN_ITEMS, period)
    length = rng.randint(period + 2, 7)
    seq = [unit[i % period] for i in range(length)]
    answer = unit[length % period]
    distractors = [x for x in PATTERN_ITEMS if x != answer]
    choices = [answer] + rng.sample(distractors, 3)
    rng.shuffle(choices)
    return f"next : {' '.join(seq)} ->", answer, choices


GENERATORS = {"arith": arith_instance, "copy": copy_instance, "reverse": reverse_instance}


def _stream(draw, key, n_train: int, n_test: int):
    """(train, test) of a generated task: test instances unique by `key`, then train instances
    whose key is not a test key (repeats allowed). `draw()` is left at the next instance."""
    test, train, seen = [], [], set()
    while len(test) < n_test:
        inst = draw()
        if key(inst) not in seen:
            seen.add(key(inst))
            test.append(inst)
    tries = 0
    while len(train) < n_train and tries < 50 * n_train:
        tries += 1
        inst = draw()
        if key(inst) not in seen:
            train.append(inst)
    return train, test


def _unseen(draw, key, taken: set, n: int) -> list:
    """The next `n` instances of `draw()` whose `key` is not in `taken` (nor repeated)."""
    taken, out = set(taken), []
    while len(out) < n:
        inst = draw()
        if key(inst) not in taken:
            taken.add(key(inst))
            out.append(inst)
    return out


def _prompt(inst) -> str:
    return inst[0]


def _language_draw(task: str, seed: int):
    rng = random.Random(f"{seed}-{task}")
    make = GENERATORS.get(task, pattern_instance)
    return lambda: make(rng)


def split_instances(task: str, n_train: int, n_test: int, seed: int = WORLD_SEED):
    """Disjoint train/test instances of a generated task (by prompt)."""
    return _stream(_language_draw(task, seed), _prompt, n_train, n_test)


def validation_instances(task: str, n_train: int, n_test: int, n_val: int,
                         seed: int = WORLD_SEED):
    """Validation instances of a generated task: drawn from the same stream after the train and
    test ones, with prompts in neither. Test and training data stay exactly as they were, so
    the validation split is disjoint from the training data of a build with this `n_train`."""
    draw = _language_draw(task, seed)
    train, test = _stream(draw, _prompt, n_train, n_test)
    return _unseen(draw, _prompt, {_prompt(i) for i in train + test}, n_val)


def fact_question(rel: str, subj: str) -> str:
    """A fact asked as a question: the validation wording, which neither training nor the test
    benchmark uses (they use the statement form)."""
    if rel == "capital":
        return f"question : what is the capital of {subj} ? answer :"
    if rel == "eats":
        return f"question : what the {subj} eats ? answer :"
    return f"question : where {subj} lives ? answer :"


# ---------------------------------------------------------------- visual instances
@dataclass(frozen=True)
class Scene:
    """A picture: up to 4 shapes, each (shape, colour, x-cell, y-cell, dx, dy, size) on a 2×2
    grid; dx, dy ∈ 0..3 jitter the position in pixels and size ∈ 0..2 the size."""

    objects: tuple

    def key(self) -> str:
        return ";".join(",".join(map(str, o)) for o in self.objects)


def random_scene(rng: random.Random, n_max: int = 4) -> Scene:
    n = rng.randint(1, n_max)
    cells = rng.sample([(x, y) for x in range(2) for y in range(2)], n)
    return Scene(tuple((rng.choice(SHAPES), rng.choice(COLORS), x, y, *_jitter(rng))
                       for x, y in cells))


def _jitter(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(4), rng.randrange(4), rng.randrange(3)


def single_scene(rng: random.Random) -> Scene:
    x, y = rng.randrange(2), rng.randrange(2)
    return Scene(((rng.choice(SHAPES), rng.choice(COLORS), x, y, *_jitter(rng)),))


def visual_question(task: str, rng: random.Random) -> tuple[Scene, str, str]:
    """(scene, question, answer) of a visual task."""
    if task == "color":
        s = single_scene(rng)
        return s, "what color is the shape ?", s.objects[0][1]
    if task == "shape":
        s = single_scene(rng)
        return s, "what shape is in the picture ?", s.objects[0][0]
    if task == "count":
        s = random_scene(rng)
        return s, "how many shapes are there ?", str(len(s.objects))
    if task == "position":
        s = single_scene(rng)
        return s, "on which side is the shape ?", POSITIONS[s.objects[0][2]]
    if task == "pope":
        s = random_scene(rng, 3)
        present = {o[0] for o in s.objects}
        ask = rng.choice(SHAPES)
        return s, f"is there a {ask} in the picture ?", "yes" if ask in present else "no"
    raise ValueError(f"unknown visual task {task!r}")


VISUAL_TASKS = ("color", "shape", "count", "position", "pope")


def _visual_draw(task: str, seed: int):
    rng = random.Random(f"{seed}-visual-{task}")
    return lambda: visual_question(task, rng)


def _scene_question(inst) -> tuple[str, str]:
    return inst[0].key(), inst[1]


def _scene(inst) -> str:
    return inst[0].key()


def split_visual(task: str, n_train: int, n_test: int, seed: int = WORLD_SEED):
    """Disjoint train/test (scene, question, answer) triples (by scene and question)."""
    return _stream(_visual_draw(task, seed), _scene_question, n_train, n_test)


def validation_visual(task: str, n_train: int, n_test: int, n_val: int,
                      seed: int = WORLD_SEED):
    """Validation triples of a visual task, drawn after the train and test ones, whose scenes
    (pictures) appear in neither; train and test stay as they were."""
    draw = _visual_draw(task, seed)
    train, test = _stream(draw, _scene_question, n_train, n_test)
    return _unseen(draw, _scene, {_scene(i) for i in train + test}, n_val)
