"""Generation error analysis (our reconstruction of the paper's analysis of what models say).

Each answer of a generative language benchmark, read from the per-sample logs a run already wrote
(no regeneration), falls in one category of CATEGORIES (docs/generation.md):
  classify.py  pure rules: answer text (+ the task's verdict) -> category
  rules.py     the phrase lists of a pair (conf/generation/<family>.yaml), loaded and checked
  collect.py   answers of run directories -> a long frame with a category per answer
  judge.py     optional local-model judge replacing the rules (off by default)
  report.py    shares per method (tables, examples) for `make tables`
"""

CATEGORIES = ("correct", "not_known", "context_hallucination", "other_error")
