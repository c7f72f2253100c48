"""Adding a method is one Python module and one YAML: a method defined outside the repository
(registered through HARNESS_METHOD_MODULES, its YAML on Hydra's search path) composes, merges
and gets its own row in `make tables`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from safetensors.torch import load_file

from harness.merge import merge_checkpoints, registry
from harness.tables import build_tables

CONF = Path(__file__).resolve().parent.parent / "conf"

MODULE = '''"""Small-Δ keep: keep the entries of Δ with |Δ| ≤ limit, zero the rest.

θ = θ_base + scale·Δ ⊙ 1[|Δ| ≤ limit],   i.e. w = scale·1[|Δ| ≤ limit]
"""

from dataclasses import dataclass

from harness.merge.registry import check_range, register


@dataclass(frozen=True)
class SmallDeltaParams:
    """limit ≥ 0; scale ≥ 0."""

    limit: float = 0.01
    scale: float = 1.0

    def __post_init__(self):
        check_range("small_delta", "limit", self.limit, 0.0, None)
        check_range("small_delta", "scale", self.scale, 0.0, None)


def weight(base, tuned, p, ctx):
    def chunk(lo, hi, fb, ft):
        return ((ft - fb).abs() <= p.limit).float().mul_(p.scale)

    return chunk


register("small_delta", SmallDeltaParams, weight, label="Small-Δ", row=75)
'''
YAML = "name: small_delta\nparams:\n  limit: 0.02\n  scale: 0.8\n"


def _record(method: str, params: dict, lang: float, vis: float) -> dict:
    scores = {"lang_a": {"suite": "language", "tool": "lm-eval", "task": "lang_a",
                         "metric": "acc", "value": lang / 100, "percent": lang, "n": 10},
              "vis_a": {"suite": "vision", "tool": "lmms-eval", "task": "vis_a",
                        "metric": "acc", "value": vis / 100, "percent": vis, "n": 10}}
    return {"run_id": f"p-{method}", "experiment": "t", "pair": "p", "method": method,
            "params": params, "seed": 0, "eval_suite": "s", "scores": scores,
            "averages": {"language": lang, "vision": vis, "all": (lang + vis) / 2},
            "merge": {}, "status": "complete", "created_at": "2026-12-01T00:00:00+00:00"}


def test_a_method_from_one_module_and_one_yaml(tmp_path, monkeypatch, tiny_llama,
                                               tiny_llava_new):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "small_delta_method.py").write_text(MODULE)
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "small_delta.yaml").write_text(YAML)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setenv(registry.PLUGINS_ENV, "small_delta_method")
    monkeypatch.setattr(registry, "METHODS", dict(registry.load_methods()))

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "method=small_delta", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"])
    GlobalHydra.instance().clear()
    params = dict(cfg.method.params)
    assert cfg.method.name == "small_delta" and params == {"limit": 0.02, "scale": 0.8}

    report = merge_checkpoints(tiny_llama, tiny_llava_new, "small_delta", params,
                               out=tmp_path / "merged", progress=False)
    assert report["method"] == "small_delta"
    base = load_file(str(tiny_llama / "model.safetensors"))["model.layers.0.mlp.up_proj.weight"]
    tuned = load_file(str(next((tiny_llava_new).glob("*.safetensors"))))[
        "model.language_model.layers.0.mlp.up_proj.weight"]
    got = load_file(str(tmp_path / "merged" / "llm" / "model.safetensors"))[
        "model.layers.0.mlp.up_proj.weight"]
    delta = tuned.float() - base.float()
    want = torch.lerp(base.float(), tuned.float(), (delta.abs() <= 0.02).float() * 0.8)
    assert torch.equal(got, want.to(got.dtype))

    results = tmp_path / "results"
    for rec in (_record("base", {}, 90, 10), _record("small_delta", params, 70, 50),
                _record("mllm", {}, 40, 90)):
        (results / "runs" / rec["run_id"]).mkdir(parents=True)
        (results / "runs" / rec["run_id"] / "result.json").write_text(json.dumps(rec))
    build_tables(results, plots=False, select="best_overall")
    table = (results / "tables" / "main_p_s.md").read_text().splitlines()
    rows = [line.split("|")[1].strip() for line in table if line.startswith("| ")][1:]
    assert rows == ["Base LLM", "MLLM", "Small-Δ"]
