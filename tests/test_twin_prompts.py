"""The twins take the branches the real pairs take: chat templates where the hub has them (and
none where it has none), prompts that start with exactly one BOS in lm-eval and lmms-eval's
`llava_hf`, an `eval.chat_template=true` the pair cannot honour refused before anything is
merged, the dtypes the hub configs declare, and the dtype rule of the evaluators."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_twins import PAIRS

from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
# The real hub pairs: which tokenizers carry a text chat template, and what the MLLM's config
# declares for its text model (docs/twins.md)
HUB_TEXT_TEMPLATE = {"twin_llava_next_llama3_8b": True, "twin_llava_next_mistral_7b": True,
                     "twin_llava15_vicuna_7b": False}
HUB_TEXT_DTYPE = {"twin_llava_next_llama3_8b": "bfloat16",
                  "twin_llava_next_mistral_7b": "bfloat16", "twin_llava15_vicuna_7b": "float16"}


@pytest.mark.parametrize("name", PAIRS)
def test_text_chat_templates_are_where_the_hub_has_them(twins, name):
    from transformers import AutoProcessor, AutoTokenizer

    pair = twins[name]
    for directory in (pair.base, pair.mllm):
        config = json.loads((directory / "tokenizer_config.json").read_text())
        assert ("chat_template" in config) == HUB_TEXT_TEMPLATE[name], directory
        tok = AutoTokenizer.from_pretrained(directory)
        assert (tok.chat_template is not None) == HUB_TEXT_TEMPLATE[name], directory
    # the processor's template stays, in the hub's chat_template.json
    assert AutoProcessor.from_pretrained(pair.mllm).chat_template
    assert json.loads((pair.mllm / "chat_template.json").read_text())["chat_template"]


@pytest.mark.parametrize("name", PAIRS)
def test_mllm_config_declares_the_hub_text_dtype_over_float16_weights(twins, name):
    from safetensors import safe_open

    pair = twins[name]
    config = json.loads((pair.mllm / "config.json").read_text())
    assert config["dtype"] == "float16"
    assert config["text_config"]["dtype"] == HUB_TEXT_DTYPE[name]
    with safe_open(str(pair.mllm / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}  # noqa: SIM118


@pytest.fixture(scope="module")
def merged(twins, tmp_path_factory):
    """Each twin merged once (task_arithmetic): {name: merge directory}."""
    from harness.merge import merge_checkpoints

    root = tmp_path_factory.mktemp("twin_merges")
    out = {}
    for name in PAIRS:
        pair = twins[name]
        out[name] = root / name
        merge_checkpoints(base=pair.base, mllm=pair.mllm, method="task_arithmetic",
                          params={"scale": 0.5}, out=out[name], device="cpu", progress=False)
    return out


@pytest.mark.parametrize("name", PAIRS)
def test_merge_outputs_declare_the_dtype_written(merged, name):
    """The NeXT MLLMs declare bfloat16 for the text model over float16 weights; out/llm and
    out/mllm declare what the merge wrote (float16), so `auto` loads what is on disk."""
    from transformers import AutoModelForCausalLM

    llm = json.loads((merged[name] / "llm" / "config.json").read_text())
    mllm = json.loads((merged[name] / "mllm" / "config.json").read_text())
    assert llm["dtype"] == llm["torch_dtype"] == "float16"
    assert mllm["dtype"] == mllm["torch_dtype"] == "float16"
    assert mllm["text_config"]["dtype"] == mllm["text_config"]["torch_dtype"] == "float16"
    model = AutoModelForCausalLM.from_pretrained(merged[name] / "llm", dtype="auto")
    assert model.dtype == torch.float16


def test_written_dtypes_follow_the_bytes(tmp_path, tiny_llama, tiny_llava_new):
    """A float32 LLaVA merged with a bfloat16 base is written (and declared) float32."""
    from harness.merge import merge_checkpoints
    from harness.merge.outputs import written_dtypes
    from harness.models.tiny import build_tiny_llama

    base16 = build_tiny_llama(tmp_path / "base16", dtype="bfloat16")
    merge_checkpoints(base16, tiny_llava_new, "mllm", {}, out=tmp_path / "m", progress=False)
    assert written_dtypes(tmp_path / "m" / "mllm") == ("float32", "float32")
    cfg = json.loads((tmp_path / "m" / "llm" / "config.json").read_text())
    assert cfg["dtype"] == "float32"


class _Spy:
    """Records the token ids a real model is called with (and its dtype), then calls it.
    Batches of one: no row is left-padded (lm-eval pads loglikelihood rows on the right)."""

    def __init__(self):
        self.calls: list[tuple[str, list[int], torch.dtype]] = []

    def install(self, monkeypatch):
        from lm_eval.models.huggingface import HFLM
        from transformers.generation.utils import GenerationMixin

        generate, model_call = GenerationMixin.generate, HFLM._model_call
        spy = self

        def spy_generate(model, *args, **kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            for row in ids.tolist():
                spy.calls.append(("generate", row, model.dtype))
            return generate(model, *args, **kwargs)

        def spy_model_call(lm, inps, *args, **kwargs):
            for row in inps.tolist():
                spy.calls.append(("loglikelihood", row, lm.model.dtype))
            return model_call(lm, inps, *args, **kwargs)

        monkeypatch.setattr(GenerationMixin, "generate", spy_generate)
        monkeypatch.setattr(HFLM, "_model_call", spy_model_call)
        return self


def _one_bos(calls, bos: int) -> None:
    assert calls
    for kind, ids, _ in calls:
        assert ids[0] == bos and bos not in ids[1:], (kind, ids[:8])


@pytest.fixture(scope="module")
def managers(tmp_path_factory):
    """lm-eval's and lmms-eval's task indexes with the micro tasks (built once: ~20 s)."""
    from harness.eval.lm_eval_runner import task_manager as lm_manager
    from harness.eval.lmms_eval_runner import task_manager as lmms_manager
    from harness.eval.local_tasks import render_task_dirs
    from harness.eval.suite import load_benchmarks, task_paths

    cfg = OmegaConf.load(ROOT / "conf" / "eval" / "micro.yaml")
    benches = load_benchmarks(cfg)
    dirs = render_task_dirs(task_paths(cfg), tmp_path_factory.mktemp("tasks"))
    return (lm_manager([b for b in benches if b.tool == "lm-eval"], dirs),
            lmms_manager([b for b in benches if b.tool == "lmms-eval"], dirs))


def _suite(**overrides):
    from harness.eval.suite import load_benchmarks

    cfg = OmegaConf.load(ROOT / "conf" / "eval" / "micro.yaml")
    cfg.limit = 1
    cfg.batch_size = 1
    cfg.merge_with(overrides)
    benches = {b.name: b for b in load_benchmarks(cfg)}
    return cfg, benches


@pytest.mark.parametrize("name", PAIRS)
def test_prompts_start_with_exactly_one_bos(merged, managers, name, tmp_path, monkeypatch):
    """Through the harness's runners and the real tools: lm-eval on out/llm (a loglikelihood
    and a generation task; with the chat template where the pair has one) and lmms-eval's
    `llava_hf` on out/mllm. Every prompt the model sees starts with one BOS and has no other;
    both tools load the model in the dtype the score entries record."""
    from transformers import AutoTokenizer

    from harness.eval.lm_eval_runner import run_lm_eval
    from harness.eval.lmms_eval_runner import run_lmms_eval

    out = merged[name]
    bos = AutoTokenizer.from_pretrained(out / "llm").bos_token_id
    lm_manager, lmms_manager = managers
    cfg, benches = _suite(dtype="bfloat16")
    spy = _Spy().install(monkeypatch)
    scores = run_lm_eval([benches["facts"], benches["arith"]], out / "llm", tmp_path / "run",
                         lm_manager, cfg, "cpu", 0, tmp_path / "cache")
    assert {k for k, _, _ in spy.calls} == {"loglikelihood", "generate"}
    _one_bos(spy.calls, bos)
    assert {d for _, _, d in spy.calls} == {torch.bfloat16}
    assert {(s["dtype"], s["device"]) for s in scores.values()} == {("bfloat16", "cpu")}
    if HUB_TEXT_TEMPLATE[name]:
        spy.calls.clear()
        chat, _ = _suite(chat_template=True)
        run_lm_eval([benches["facts"], benches["arith"]], out / "llm", tmp_path / "chat",
                    lm_manager, chat, "cpu", 0, tmp_path / "chat_cache")
        _one_bos(spy.calls, bos)
        assert {d for _, _, d in spy.calls} == {torch.float32}  # auto on CPU
    spy.calls.clear()
    scores = run_lmms_eval([benches["color"]], out / "mllm", tmp_path / "vis", lmms_manager,
                           cfg, "cpu", 0)
    _one_bos(spy.calls, bos)
    assert {d for _, _, d in spy.calls} == {torch.bfloat16}
    assert scores["color"]["dtype"] == "bfloat16"


def test_simple_llava_hf_takes_its_vicuna_template_for_llava15(merged, monkeypatch):
    """lmms-eval's simple `llava_hf` formats with the tokenizer's template, or its built-in
    Vicuna one when the tokenizer has none (llava-1.5-7b-hf on the hub): one BOS. A tokenizer
    template that writes `<s>` itself would give two."""
    from lmms_eval.api.instance import Instance
    from lmms_eval.models import get_model
    from PIL import Image

    out = merged["twin_llava15_vicuna_7b"] / "mllm"
    lm = get_model("llava_hf", force_simple=True).create_from_arg_string(
        f"pretrained={out},device_map=cpu,dtype=float32", {"batch_size": 1, "device": "cpu"})
    assert lm.is_simple and lm.tokenizer.chat_template is None
    lm.task_dict = {"probe": {"test": [{"image": Image.new("RGB", (56, 56), (200, 40, 40))}]}}
    spy = _Spy().install(monkeypatch)
    request = Instance(request_type="generate_until", idx=0, metadata={"task": "probe",
                                                                       "doc_id": 0, "repeats": 1},
                       arguments=("What colour is it?", {"max_new_tokens": 2},
                                  lambda doc: [doc["image"]], 0, "probe", "test"))
    lm.generate_until([request])
    bos = lm.tokenizer.bos_token_id
    _one_bos(spy.calls, bos)
    assert "A chat between a curious user" in lm.tokenizer.chat_template  # the fallback
    spy.calls.clear()
    lm.chat_template = "{{ bos_token }}" + lm.tokenizer.chat_template
    lm.generate_until([request])
    assert spy.calls[0][1][:2] == [bos, bos]


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_chat_template_without_a_text_template_is_refused_before_the_merge(twins, twin_paths,
                                                                           tmp_path):
    from harness import pipeline

    common = [f"paths.cache={twin_paths.cache}", f"paths.results={tmp_path}",
              "method=task_arithmetic", "eval=micro", "eval.chat_template=true"]
    cfg = _compose(["pair=twin_llava15_vicuna_7b", *common])
    with pytest.raises(ConfigError, match="eval.chat_template=true, but pair "
                                          "twin_llava15_vicuna_7b has no text chat template"):
        pipeline.run(cfg)
    assert not Path(cfg.paths.merges).exists() or not any(Path(cfg.paths.merges).iterdir())
    # a suite without lm-eval benchmarks and the pairs with a text template pass
    from harness.eval.preflight import check_eval_setup
    from harness.pairs import resolve_pair

    pair = resolve_pair(cfg.pair, cfg.paths)
    check_eval_setup(_compose(["pair=twin_llava15_vicuna_7b", *common, "eval=none"]).eval, pair)
    for name in ("twin_llava_next_mistral_7b", "twin_llava_next_llama3_8b"):
        cfg = _compose([f"pair={name}", *common])
        check_eval_setup(cfg.eval, resolve_pair(cfg.pair, cfg.paths))
    with pytest.raises(ConfigError, match="eval.dtype='fp8' is not valid"):
        check_eval_setup(_compose(["pair=twin_llava15_vicuna_7b", *common[:-1],
                                   "eval.dtype=fp8"]).eval, pair)


@pytest.mark.parametrize("pair,suite,dtype", [
    ("llava_next_llama3_8b", "paper13", "bfloat16"),
    ("llava15_vicuna_7b", "generation", "bfloat16"),
    ("twin_llava_next_mistral_7b", "paper13", "bfloat16"),
    ("micro", "micro", "float32"),
])
def test_eval_dtype_defaults_to_the_pairs_on_every_device(pair, suite, dtype):
    from harness import records
    from harness.eval.dtype import eval_dtype

    cfg = _compose([f"pair={pair}", f"eval={suite}"])
    assert cfg.eval.dtype == dtype
    assert eval_dtype(cfg.eval, "cpu") == eval_dtype(cfg.eval, "cuda:0") == dtype
    assert records.identity(cfg)["score"]["dtype"] == dtype  # the same id on any machine
    other = _compose([f"pair={pair}", f"eval={suite}", "eval.dtype=float16"])
    assert eval_dtype(other.eval, "cuda") == "float16"
    assert records.run_id(other) != records.run_id(cfg)


def test_auto_dtype_is_a_rule_of_the_device():
    from harness.eval.dtype import eval_dtype

    auto = OmegaConf.create({"dtype": "auto"})
    assert eval_dtype(auto, "cpu") == "float32" and eval_dtype(auto, "cuda") == "bfloat16"
    # a suite composed without a pair (tests, tools) falls back to the same rule
    standalone = OmegaConf.load(ROOT / "conf" / "eval" / "paper13.yaml")
    assert eval_dtype(standalone, "cpu") == "float32"
    rehearsal = _compose(["+experiment=rehearsal", "pair=twin_llava15_vicuna_7b",
                          "eval=paper13", "hydra.mode=RUN"])
    assert rehearsal.eval.dtype == "float32"


def test_record_names_the_dtype_each_tool_used():
    from harness.pipeline import evaluated_with

    scores = {"mmlu": {"tool": "lm-eval", "dtype": "bfloat16", "device": "cuda"},
              "pope": {"tool": "lmms-eval", "dtype": "bfloat16", "device": "cuda"}}
    assert evaluated_with(scores) == {"lm-eval": {"dtype": "bfloat16", "device": "cuda"},
                                      "lmms-eval": {"dtype": "bfloat16", "device": "cuda"}}
