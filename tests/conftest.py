"""Session fixtures: tiny random checkpoints in real transformers formats, built once."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Before anything imports `datasets` (it reads its cache location once, at import): the tests
# never read or write the user's HF caches, so a dataset cached there cannot leak into a test.
_HF_HOME = tempfile.mkdtemp(prefix="harness-tests-hf-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF_HOME, "datasets")
os.environ.pop("LMMS_EVAL_DATASETS_CACHE", None)

import pytest  # noqa: E402

import harness  # noqa: E402,F401  (first of the harness: pins the portable CPU kernels)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_llama(tiny_root):
    """A random LlamaForCausalLM (the base LLM)."""
    from harness.models.tiny import build_tiny_llama

    return build_tiny_llama(tiny_root / "llama")


@pytest.fixture(scope="session")
def tiny_llava_new(tiny_root, tiny_llama):
    """A LLaVA tuned from tiny_llama, newer key layout (model.language_model.*)."""
    from harness.models.tiny import build_tiny_llava

    return build_tiny_llava(tiny_root / "llava_new", tiny_llama, kind="llava", layout="new")


@pytest.fixture(scope="session")
def tiny_llava_old(tiny_root, tiny_llama):
    """A LLaVA tuned from tiny_llama, older key layout (language_model.model.*)."""
    from harness.models.tiny import build_tiny_llava

    return build_tiny_llava(tiny_root / "llava_old", tiny_llama, kind="llava", layout="old")


@pytest.fixture(scope="session")
def tiny_llava_next(tiny_root, tiny_llama):
    """A LLaVA-NeXT tuned from tiny_llama (older layout, with image_newline)."""
    from harness.models.tiny import build_tiny_llava

    return build_tiny_llava(tiny_root / "llava_next", tiny_llama, kind="llava_next",
                            layout="old")


@pytest.fixture(scope="session")
def tiny_tuned_llm(tiny_root, tiny_llama):
    """A plain causal LM post-trained (perturbed) from tiny_llama."""
    from harness.models.tiny import build_tiny_tuned_llm

    return build_tiny_tuned_llm(tiny_root / "tuned_llm", tiny_llama)


@pytest.fixture(scope="session")
def micro_cache():
    """The cache root holding the default micro pair (built once; reused across sessions, since
    the build is deterministic and keyed by its config)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from harness.micro import ensure_pair

    root = Path(__file__).resolve().parent.parent
    cache = Path(os.environ.get("HARNESS_CACHE", root / ".cache" / "harness"))
    pair = OmegaConf.load(root / "conf" / "pair" / "micro.yaml")
    ensure_pair(pair, cache, progress=False)
    return cache


TWIN_PAIRS = ("twin_llava_next_llama3_8b", "twin_llava_next_mistral_7b", "twin_llava15_vicuna_7b")


@pytest.fixture(scope="session")
def twin_paths(tmp_path_factory):
    """A `paths` config whose cache holds this session's twin builds."""
    from omegaconf import OmegaConf

    return OmegaConf.create({"cache": str(tmp_path_factory.mktemp("twin_cache"))})


@pytest.fixture(scope="session")
def twins(twin_paths):
    """Every twin pair, built once per session: {name: ResolvedPair}."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from harness.pairs import resolve_pair

    conf = Path(__file__).resolve().parent.parent / "conf" / "pair"
    return {name: resolve_pair(OmegaConf.load(conf / f"{name}.yaml"), twin_paths)
            for name in TWIN_PAIRS}
