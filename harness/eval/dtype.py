"""The dtype both evaluators load a merged model in: a rule, never the checkpoint's declaration.

`eval.dtype` in every suite defaults to the pair's `eval_dtype` (conf/pair/*.yaml: bfloat16 for
the paper pairs and their twins, float32 for the micro pair), on every device, so a run's
identity (which holds `eval.dtype`) does not depend on the machine that computes it (sweep
manifests are written on login nodes without a GPU). `auto` (a pair without `eval_dtype`, or
asked for) is float32 on CPU and bfloat16 on CUDA, for both tools alike; it is never handed to a
tool, whose own `auto` would follow the config's declared dtype.
"""

from __future__ import annotations

from harness.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")


def eval_dtype(eval_cfg, device: str) -> str:
    """The dtype name (float32 | bfloat16 | float16) the evaluators use on `device`
    (cpu | cuda[:N]) for `eval_cfg`; ConfigError names a value that is not one."""
    dtype = str(eval_cfg.get("dtype") or "auto")
    if dtype == "auto":
        return "float32" if str(device).startswith("cpu") else "bfloat16"
    if dtype not in DTYPES:
        raise ConfigError(f"eval.dtype={dtype!r} is not valid; choose one of "
                          f"{', '.join(DTYPES)} or auto (float32 on CPU, bfloat16 on CUDA)")
    return dtype
