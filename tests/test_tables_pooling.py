"""`make tables` pools only seeds: records that differ in their evaluation setup or their
checkpoints never share a row; a malformed record is skipped and named, never a crash."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from harness import records
from harness.records import write_record
from harness.tables import build_tables

CONF = Path(__file__).resolve().parent.parent / "conf"
SCORE = {"name": "s", "benchmarks": {"lang_a": {"task": "a"}}, "limit": None, "backend": "hf",
         "dtype": "auto", "chat_template": False, "task_files": {},
         "versions": {"torch": "2.14.1", "transformers": "5.24.0", "lm_eval": "0.4.13",
                      "lmms_eval": "0.7.3"}}
PAIR = {"name": "p", "base": {"fingerprint": "sha256:aaaa"}, "mllm": {"fingerprint": "sha256:bbbb"}}


def _record(method: str, lang: float, vis: float, seed: int = 0, pair: str = "p",
            score: dict | None = None, pair_ident: dict | None = None, **merge) -> dict:
    ident = {"merge": {"pair": pair_ident or PAIR, "method": method, "params": {}, "seed": seed,
                       **merge},
             "score": score or SCORE}
    return {"run_id": records.run_id_of(ident), "pair": pair, "method": method, "params": {},
            "seed": seed, "eval_suite": "s", "identity": ident,
            "scores": {"lang_a": {"suite": "language", "percent": lang},
                       "vis_a": {"suite": "vision", "percent": vis}},
            "averages": {"language": lang, "vision": vis, "all": (lang + vis) / 2}}


def _write(results: Path, *recs: dict) -> None:
    for rec in recs:
        write_record(results / "runs" / rec["run_id"], rec)


def _tables(results: Path, pattern: str = "main_*.md") -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((results / "tables").glob(pattern))}


def test_seeds_pool_into_one_row(tmp_path):
    _write(tmp_path, _record("mllm", 40, 90, seed=0), _record("mllm", 50, 80, seed=1))
    build_tables(tmp_path, plots=False)
    assert list(_tables(tmp_path)) == ["main_p_s.md"]
    assert "| MLLM | 45.0 ± 7.1 |" in _tables(tmp_path)["main_p_s.md"]


def test_records_differing_only_in_the_limit_are_not_pooled(tmp_path, capsys):
    limited = {**SCORE, "limit": 4}
    _write(tmp_path, _record("mllm", 0, 90), _record("mllm", 25, 80, score=limited))
    build_tables(tmp_path, plots=False)
    tables = _tables(tmp_path)
    assert len(tables) == 2 and "main_p_s.md" not in tables
    assert not any("±" in text for text in tables.values())  # nothing averaged as seeds
    (full,) = [t for t in tables.values() if "this table has score.limit=None" in t]
    (four,) = [t for t in tables.values() if "this table has score.limit=4" in t]
    assert "| MLLM | 0.0 |" in full and "| MLLM | 25.0 |" in four
    assert "not pooled" in capsys.readouterr().out


def test_records_of_other_checkpoints_or_data_are_not_pooled(tmp_path):
    rebuilt = {**PAIR, "mllm": {"fingerprint": "sha256:cccc"}}
    mirror = {**SCORE, "data": "0123abcd"}
    _write(tmp_path, _record("mllm", 10, 90), _record("mllm", 20, 80, pair_ident=rebuilt),
           _record("mllm", 30, 70, score=mirror))
    build_tables(tmp_path, plots=False)
    tables = _tables(tmp_path)
    assert len(tables) == 3
    notes = "\n".join(tables.values())
    assert "pair.mllm.fingerprint=sha256:cccc" in notes and "score.data=0123abcd" in notes


def test_a_merge_revision_gets_its_own_row(tmp_path):
    _write(tmp_path, _record("ties", 10, 90), _record("ties", 30, 70, revision="2"))
    build_tables(tmp_path, plots=False, select="best_overall")
    csv = pd.read_csv(tmp_path / "tables" / "sweep_p_s_ties.csv")
    assert sorted(csv.config) == ["- [revision=2]", "- [revision=None]"]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_two_local_pairs_never_share_a_table(tmp_path, tiny_llama, tiny_llava_new,
                                             tiny_llava_old):
    results = tmp_path / "results"
    for mllm, lang in ((tiny_llava_new, 10.0), (tiny_llava_old, 70.0)):
        cfg = _compose(["pair=local", f"pair.base={tiny_llama}", f"pair.mllm={mllm}",
                        "method=mllm"])
        ident = records.identity(cfg)
        rec = _record("mllm", lang, 50, pair=cfg.pair.name, pair_ident=ident["merge"]["pair"],
                      score=ident["score"])
        rec["run_id"] = records.run_id_of(ident)
        _write(results, rec)
    build_tables(results, plots=False)
    tables = _tables(results)
    assert len(tables) == 2
    assert sorted(n.split("_")[1].split("-")[0] for n in tables) == ["local", "local"]
    assert not any("±" in text for text in tables.values())


def test_one_local_pair_name_over_other_checkpoints_is_split(tmp_path, tiny_llama,
                                                             tiny_llava_new, tiny_llava_old):
    results = tmp_path / "results"
    for mllm, lang in ((tiny_llava_new, 10.0), (tiny_llava_old, 70.0)):
        cfg = _compose(["pair=local", f"pair.base={tiny_llama}", f"pair.mllm={mllm}",
                        "pair.name=same", "method=mllm"])
        ident = records.identity(cfg)
        rec = _record("mllm", lang, 50, pair="same", pair_ident=ident["merge"]["pair"],
                      score=ident["score"])
        rec["run_id"] = records.run_id_of(ident)
        _write(results, rec)
    build_tables(results, plots=False)
    tables = _tables(results)
    assert len(tables) == 2 and all("pair.mllm.fingerprint" in t for t in tables.values())


def test_a_malformed_record_is_skipped_and_named(tmp_path, capsys):
    good = _record("mllm", 40, 90)
    no_percent = copy.deepcopy(_record("base", 80, 10))
    del no_percent["scores"]["lang_a"]["percent"]
    no_percent["run_id"] = "no-percent"
    bad_params = {**_record("ties", 50, 50), "run_id": "bad-params", "params": "density=0.2"}
    no_pair = {**_record("dare", 50, 50), "run_id": "no-pair"}
    del no_pair["pair"]
    _write(tmp_path, good, no_percent, bad_params, no_pair)
    build_tables(tmp_path, plots=False)
    out = capsys.readouterr().out
    assert "no-percent/result.json: missing field scores.lang_a.percent" in out
    assert "bad-params/result.json: field params is not an object" in out
    assert "no-pair/result.json: missing field pair" in out
    assert "3 record(s) skipped" in out
    csv = pd.read_csv(tmp_path / "tables" / "main_p_s.csv", index_col=0)
    assert list(csv.index) == ["MLLM"]


def test_make_tables_survives_a_malformed_record(tmp_path):
    import os
    import subprocess
    import sys

    bad = _record("base", 80, 10)
    bad["scores"]["vis_a"] = {"suite": "vision"}
    _write(tmp_path, _record("mllm", 40, 90), bad)
    proc = subprocess.run([sys.executable, "-m", "harness.tables", "--no-plots"],
                          cwd=CONF.parent, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HARNESS_RESULTS": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "missing field scores.vis_a.percent" in proc.stdout
    assert "main_p_s.md" in proc.stdout
